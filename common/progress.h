// ProgressLine: one line of training/processing progress (samples/s, loss, AUC, ETA) that
// updates in place on a terminal (carriage return) and prints plain lines, at most one every
// `plain_interval_s`, when stderr is not a terminal (logs, CI). The position and percentage count
// every unit done, a resumed run's before this process included (StartFrom); the rate and ETA
// only the units done since the line was created. Not thread-safe: one owner.
#ifndef IPS_COMMON_PROGRESS_H_
#define IPS_COMMON_PROGRESS_H_

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/timer.h"

namespace ips {

class ProgressLine {
 public:
  // total: expected number of units (0 if unknown: no ETA). unit: "samples", "events", ...
  ProgressLine(std::string label, int64_t total, std::string unit, FILE* out = stderr,
               double plain_interval_s = 10.0);
  ~ProgressLine();

  // Reports that `done` units are complete; `extra` (e.g. "loss=0.512 auc=0.731") is appended.
  // Redraws at most every 0.2 s on a terminal.
  void Update(int64_t done, const std::string& extra = "");
  // Sets the count without drawing (for a final Finish()).
  void Set(int64_t done) { last_done_ = done; }
  // `done` units were complete before this process started (a run resumed from a checkpoint):
  // they count in the position and percentage but not in the rate, which is this process's
  // (done - start) / elapsed, nor in the ETA. Call before the first Update.
  void StartFrom(int64_t done) {
    start_ = done;
    last_done_ = done;
  }
  // Prints the final state and a newline.
  void Finish(const std::string& extra = "");

  // Formats the line without printing (exposed for tests), at the elapsed time now or at
  // `elapsed_s` seconds.
  std::string Format(int64_t done, const std::string& extra) const;
  std::string Format(int64_t done, const std::string& extra, double elapsed_s) const;

 private:
  std::string label_;
  int64_t total_;
  std::string unit_;
  FILE* out_;
  bool tty_;
  double plain_interval_s_;
  Timer timer_;
  double last_draw_s_ = -1e9;
  int64_t start_ = 0;  // units done before this process (StartFrom)
  int64_t last_done_ = 0;
  bool finished_ = false;
  size_t last_width_ = 0;
};

}  // namespace ips

#endif  // IPS_COMMON_PROGRESS_H_
