// Runs the built `ips` binary (path in the IPS_BINARY compile definition) as a user would, for
// the CLI tests: exit code and output, and the last line (where `RESULT ...` must be).
#ifndef IPS_TESTS_TESTING_RUN_IPS_H_
#define IPS_TESTS_TESTING_RUN_IPS_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#ifndef IPS_BINARY
#error "IPS_BINARY must name the ips executable"
#endif

namespace ips::testing {

struct IpsRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together (RunIps), or stdout alone (RunIpsSplit)
  std::string error;   // stderr (RunIpsSplit only)
};

// `ips ARGS 2>&1`, after the shell command `before` when given (e.g. "ulimit -v 4000000 && ").
inline IpsRun RunIps(const std::string& args, const std::string& before = "") {
  IpsRun r;
  const std::string cmd = before + std::string(IPS_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// `ips ARGS` with stdout and stderr captured apart.
inline IpsRun RunIpsSplit(const std::string& args) {
  const std::string base = "/tmp/ips_cli_test_" + std::to_string(::getpid());
  const std::string out = base + ".stdout", err = base + ".stderr";
  const int status =
      std::system((std::string(IPS_BINARY) + " " + args + " >" + out + " 2>" + err).c_str());
  auto slurp = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  IpsRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = slurp(out);
  r.error = slurp(err);
  std::remove(out.c_str());
  std::remove(err.c_str());
  return r;
}

inline std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

}  // namespace ips::testing

#endif  // IPS_TESTS_TESTING_RUN_IPS_H_
