// MetricsLine: one line of --metrics_out, the JSON-lines file that `ips train` (single-process,
// under mpirun, on a dataset, on synthetic data and on a stream) and `ips eval` append to. Every
// writer builds its lines here, so every line is one flat JSON object that begins with "phase"
// (what the line reports: "train", "epoch", "eval", "result", "stream", "stream_result") and
// "model", numbers that are not finite are null (JSON has no NaN), and the same quantity has the
// same name in every kind of run (README.md, "Metrics lines", lists the members of each phase).
// ParseMetricsLine reads a line back (the tests check every line with it).
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

// A line read back by ParseMetricsLine: its members in order, string values unquoted and
// unescaped, numbers, true, false and null as written.
struct ParsedMetricsLine {
  std::vector<std::pair<std::string, std::string>> members;

  bool Has(std::string_view key) const { return Find(key) != nullptr; }
  // The value of `key`, "" when absent.
  std::string Get(std::string_view key) const {
    const std::string* v = Find(key);
    return v == nullptr ? std::string() : *v;
  }
  const std::string* Find(std::string_view key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
};

// Parses one line as MetricsLine writes it: a flat JSON object of strings (escapes other than
// \uXXXX), numbers (JSON's grammar: no nan or inf), true, false and null, keys unique; a trailing
// newline is allowed. Errors: INVALID_ARGUMENT naming the column and what is wrong there.
inline StatusOr<ParsedMetricsLine> ParseMetricsLine(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  size_t i = 0;
  auto fail = [&](const std::string& what) {
    return InvalidArgumentError("metrics line, column " + std::to_string(i + 1) + ": " + what +
                                " in '" + std::string(line) + "'");
  };
  auto skip_space = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  };
  auto digits = [&] {
    const size_t b = i;
    while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
    return i > b;
  };
  // A string at i (at its opening quote) into *out.
  auto read_string = [&](std::string* out) -> bool {
    if (i >= line.size() || line[i] != '"') return false;
    for (++i; i < line.size() && line[i] != '"'; ++i) {
      if (static_cast<unsigned char>(line[i]) < 0x20) return false;
      if (line[i] != '\\') {
        *out += line[i];
        continue;
      }
      if (++i >= line.size()) return false;
      const char e = line[i];
      if (e == 'u') {
        if (i + 4 >= line.size()) return false;
        unsigned code = 0;
        for (int h = 1; h <= 4; ++h) {
          const char c = line[i + h];
          const int d = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
          if (d < 0) return false;
          code = code * 16 + static_cast<unsigned>(d);
        }
        if (code >= 0x80) return false;  // MetricsLine escapes control characters only
        *out += static_cast<char>(code);
        i += 4;
      } else {
        const std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
        const size_t at = from.find(e);
        if (at == std::string_view::npos) return false;
        *out += to[at];
      }
    }
    if (i >= line.size()) return false;
    ++i;  // the closing quote
    return true;
  };

  ParsedMetricsLine parsed;
  skip_space();
  if (i >= line.size() || line[i] != '{') return fail("expected '{'");
  ++i;
  skip_space();
  if (i < line.size() && line[i] == '}') {
    ++i;
  } else {
    while (true) {
      skip_space();
      std::string key;
      if (!read_string(&key)) return fail("expected a key string");
      if (parsed.Has(key)) return fail("key \"" + key + "\" repeated");
      skip_space();
      if (i >= line.size() || line[i] != ':') return fail("expected ':' after \"" + key + "\"");
      ++i;
      skip_space();
      std::string value;
      if (i < line.size() && line[i] == '"') {
        if (!read_string(&value)) return fail("bad string value of \"" + key + "\"");
      } else {
        const size_t b = i;
        bool ok = false;
        for (const std::string_view word : {"true", "false", "null"})
          if (line.substr(i, word.size()) == word) {
            i += word.size();
            ok = true;
            break;
          }
        if (!ok) {
          if (i < line.size() && line[i] == '-') ++i;
          if (i < line.size() && line[i] == '0') {
            ++i;
            ok = true;
          } else {
            ok = digits();
          }
          if (ok && i < line.size() && line[i] == '.') {
            ++i;
            ok = digits();
          }
          if (ok && i < line.size() && (line[i] == 'e' || line[i] == 'E')) {
            ++i;
            if (i < line.size() && (line[i] == '+' || line[i] == '-')) ++i;
            ok = digits();
          }
        }
        if (!ok) {
          i = b;
          return fail("value of \"" + key + "\" is not a string, number, true, false or null");
        }
        value = std::string(line.substr(b, i - b));
      }
      parsed.members.emplace_back(std::move(key), std::move(value));
      skip_space();
      if (i < line.size() && line[i] == ',') {
        ++i;
        continue;
      }
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      return fail("expected ',' or '}'");
    }
  }
  skip_space();
  if (i != line.size()) return fail("text after the object");
  return parsed;
}

// Every line of a --metrics_out file's text (empty lines skipped), each read by ParseMetricsLine
// and beginning with "phase" and "model" as MetricsLine writes them. Errors: INVALID_ARGUMENT
// naming the line (1-based) and what is wrong with it.
inline StatusOr<std::vector<ParsedMetricsLine>> ParseMetricsLines(std::string_view text) {
  std::vector<ParsedMetricsLine> lines;
  int64_t number = 0;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++number;
    if (line.empty()) continue;
    StatusOr<ParsedMetricsLine> parsed = ParseMetricsLine(line);
    if (!parsed.ok()) return parsed.status().WithContext("line " + std::to_string(number));
    const auto& m = parsed->members;
    if (m.size() < 2 || m[0].first != "phase" || m[1].first != "model")
      return InvalidArgumentError("metrics line " + std::to_string(number) +
                                  " does not begin with \"phase\" and \"model\": '" +
                                  std::string(line) + "'");
    lines.push_back(std::move(*parsed));
  }
  return lines;
}

// The lines of `lines` whose "phase" is `phase`, in order.
inline std::vector<ParsedMetricsLine> LinesOfPhase(const std::vector<ParsedMetricsLine>& lines,
                                                   std::string_view phase) {
  std::vector<ParsedMetricsLine> out;
  for (const ParsedMetricsLine& l : lines)
    if (l.Get("phase") == phase) out.push_back(l);
  return out;
}

}  // namespace ips

#endif  // IPS_WORKER_METRICS_LINE_H_
