#include "common/logging.h"

#include <glog/logging.h>

#include <atomic>

namespace ips {

void InitLogging(const char* argv0) {
  static std::atomic<bool> done{false};
  if (done.exchange(true)) return;
  FLAGS_logtostderr = true;
  FLAGS_colorlogtostderr = false;
  google::InitGoogleLogging(argv0);
}

}  // namespace ips
