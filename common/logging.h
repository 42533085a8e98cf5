// glog initialisation for the `ips` binary and tests: logs go to stderr (not files) unless
// --log_dir is given, and a rank/role prefix can be set once MPI roles are known.
#ifndef IPS_COMMON_LOGGING_H_
#define IPS_COMMON_LOGGING_H_

#include <string>

namespace ips {

// Call once at the start of main(). Safe to call more than once (later calls do nothing).
void InitLogging(const char* argv0);

}  // namespace ips

#endif  // IPS_COMMON_LOGGING_H_
