#include "common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ips {
namespace {

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  std::ostringstream os;
  if (t >= 3600) os << t / 3600 << "h";
  if (t >= 60) os << (t % 3600) / 60 << "m";
  os << t % 60 << "s";
  return os.str();
}

std::string FormatRate(double r) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  if (r >= 1e6) {
    os.precision(2);
    os << r / 1e6 << "M";
  } else if (r >= 1e4) {
    os.precision(1);
    os << r / 1e3 << "k";
  } else {
    os.precision(0);
    os << r;
  }
  return os.str();
}

}  // namespace

ProgressLine::ProgressLine(std::string label, int64_t total, std::string unit, FILE* out,
                           double plain_interval_s)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      out_(out),
      tty_(isatty(fileno(out)) != 0),
      plain_interval_s_(plain_interval_s) {}

ProgressLine::~ProgressLine() {
  if (!finished_ && tty_ && last_width_ > 0) std::fputc('\n', out_);
}

std::string ProgressLine::Format(int64_t done, const std::string& extra) const {
  return Format(done, extra, timer_.Seconds());
}

std::string ProgressLine::Format(int64_t done, const std::string& extra, double elapsed) const {
  // This process's units only: a resumed run's earlier ones took no time here.
  const double rate = elapsed > 0 ? std::max(0.0, static_cast<double>(done - start_) / elapsed) : 0;
  std::ostringstream os;
  os << label_ << ": " << done;
  if (total_ > 0) os << "/" << total_ << " (" << static_cast<int>(100.0 * done / total_) << "%)";
  os << " " << unit_ << ", " << FormatRate(rate) << " " << unit_ << "/s";
  if (!extra.empty()) os << ", " << extra;
  os << ", elapsed " << FormatDuration(elapsed);
  if (total_ > 0 && done < total_ && rate > 0)
    os << ", ETA " << FormatDuration((total_ - done) / rate);
  return os.str();
}

void ProgressLine::Update(int64_t done, const std::string& extra) {
  last_done_ = done;
  const double now = timer_.Seconds();
  const double interval = tty_ ? 0.2 : plain_interval_s_;
  if (now - last_draw_s_ < interval) return;
  last_draw_s_ = now;
  const std::string line = Format(done, extra);
  if (tty_) {
    std::string padded = line;
    if (padded.size() < last_width_) padded.append(last_width_ - padded.size(), ' ');
    std::fprintf(out_, "\r%s", padded.c_str());
    last_width_ = line.size();
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::Finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  const std::string line = Format(last_done_, extra);
  if (tty_) {
    std::string padded = line;
    if (padded.size() < last_width_) padded.append(last_width_ - padded.size(), ' ');
    std::fprintf(out_, "\r%s\n", padded.c_str());
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

}  // namespace ips
