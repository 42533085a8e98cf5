// Wall-clock timing helpers (steady clock).
#ifndef IPS_COMMON_TIMER_H_
#define IPS_COMMON_TIMER_H_

#include <chrono>

namespace ips {

class Timer {
 public:
  Timer() : start_(Clock::now()) {}
  void Reset() { start_ = Clock::now(); }
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double Millis() const { return Seconds() * 1e3; }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
};

}  // namespace ips

#endif  // IPS_COMMON_TIMER_H_
