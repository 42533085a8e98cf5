// MetricsLine: one line of --metrics_out, the JSON-lines file that `ips train` (single-process,
// under mpirun, on a dataset, on synthetic data and on a stream) and `ips eval` append to. Every
// writer builds its lines here, so every line is one flat JSON object that begins with "phase"
// (what the line reports: "train", "epoch", "eval", "result", "stream", "stream_result") and
// "model", numbers that are not finite are null (JSON has no NaN), and the same quantity has the
// same name in every kind of run (README.md, "Metrics lines", lists the members of each phase).
// The tests read lines back with tests/testing/metrics_lines.h.
#ifndef IPS_WORKER_METRICS_LINE_H_
#define IPS_WORKER_METRICS_LINE_H_

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace ips {

// A JSON number with `significant` digits (8 by default; 17 round-trips a double), or null for
// NaN/inf.
inline std::string JsonNumber(double v, int significant = 8) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os << std::setprecision(significant) << v;
  return os.str();
}

// A JSON number with `decimals` digits after the point, or null for NaN/inf.
inline std::string JsonFixed(double v, int decimals) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << v;
  return os.str();
}

// Appends the contents of a JSON string holding `s`: '"', '\\' and control characters escaped
// (other bytes as they are; worker/serving.cc's JsonEscape also replaces invalid UTF-8).
inline void AppendJsonEscaped(std::string* out, std::string_view s) {
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      out->append(buf);
    } else {
      out->push_back(c);
    }
  }
}

// A JSON string: quoted, escaped by AppendJsonEscaped.
inline std::string JsonString(std::string_view s) {
  std::string out = "\"";
  AppendJsonEscaped(&out, s);
  return out + "\"";
}

class MetricsLine {
 public:
  MetricsLine(std::string_view phase, std::string_view model) {
    text_ = "{\"phase\":" + JsonString(phase) + ",\"model\":" + JsonString(model);
  }

  MetricsLine& Str(std::string_view key, std::string_view value) {
    return Raw(key, JsonString(value));
  }
  MetricsLine& Int(std::string_view key, int64_t value) { return Raw(key, std::to_string(value)); }
  // JsonNumber: 8 significant digits unless told (17 for a value tests compare bit for bit).
  MetricsLine& Num(std::string_view key, double value, int significant = 8) {
    return Raw(key, JsonNumber(value, significant));
  }
  // JsonFixed: `decimals` digits after the point (the result lines' figures, as the RESULT line's).
  MetricsLine& Decimals(std::string_view key, double value, int decimals) {
    return Raw(key, JsonFixed(value, decimals));
  }
  // Members formatted already ("k":v,"k2":v2, e.g. internal::EvalJsonMembers); "" adds none.
  MetricsLine& Members(std::string_view members) {
    if (!members.empty()) (text_ += ',') += members;
    return *this;
  }

  std::string str() const { return text_ + "}\n"; }  // the line with its newline
  // Writes the line and flushes; the caller checks the stream (a full disk shows there).
  void WriteTo(std::ostream* out) const {
    *out << str();
    out->flush();
  }

 private:
  MetricsLine& Raw(std::string_view key, const std::string& value) {
    ((text_ += ',') += JsonString(key)) += ':';
    text_ += value;
    return *this;
  }

  std::string text_;  // the line so far, without its closing brace
};

}  // namespace ips

#endif  // IPS_WORKER_METRICS_LINE_H_
