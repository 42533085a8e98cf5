// A checkpoint removed while it is being read, for tests (worker/checkpoint.h
// CheckpointReader::SetRaceHookForTesting): the hook for the lifetime of a ScopedRaceHook, which
// records where `event` fired and lets the test remove or replace checkpoints exactly there.
#ifndef IPS_TESTS_TESTING_SCOPED_RACE_HOOK_H_
#define IPS_TESTS_TESTING_SCOPED_RACE_HOOK_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "worker/checkpoint.h"

namespace ips::testing {

class ScopedRaceHook {
 public:
  // On each `event` ("picked", "opened"): its directory is appended to seen(), then race(n, dir)
  // runs with n = how many times it has fired (1 the first time). The hook is cleared when the
  // object is destroyed, whatever the test's outcome.
  ScopedRaceHook(std::string event, std::function<void(size_t n, const std::string& dir)> race)
      : event_(std::move(event)), race_(std::move(race)) {
    CheckpointReader::SetRaceHookForTesting([this](const std::string& e, const std::string& dir) {
      if (e != event_) return;
      seen_.push_back(dir);
      race_(seen_.size(), dir);
    });
  }
  ~ScopedRaceHook() { CheckpointReader::SetRaceHookForTesting(nullptr); }
  ScopedRaceHook(const ScopedRaceHook&) = delete;
  ScopedRaceHook& operator=(const ScopedRaceHook&) = delete;

  const std::vector<std::string>& seen() const { return seen_; }

 private:
  std::string event_;
  std::function<void(size_t, const std::string&)> race_;
  std::vector<std::string> seen_;
};

}  // namespace ips::testing

#endif  // IPS_TESTS_TESTING_SCOPED_RACE_HOOK_H_
