#include "common/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace ips {

Status OpenAppendFile(const std::string& path, const std::string& what, std::ofstream* out) {
  const std::string message = "cannot open " + what + " file '" + path + "'";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) return StatusFromErrno(errno, message);
  ::close(fd);
  // The stream can still fail: libstdc++ seeks to the end, which procfs files refuse (EINVAL).
  // Its errno is taken when it sets one.
  errno = 0;
  out->open(path, std::ios::app);
  if (*out) return Status::Ok();
  if (errno != 0) return StatusFromErrno(errno, message);
  return FailedPreconditionError(message + ": the output stream failed");
}

}  // namespace ips
