// Reading --metrics_out lines back (worker/metrics_line.h writes them), for the tests: a strict
// parser of one flat JSON object per line (ParseMetricsLine) and helpers to pick lines by phase.
#ifndef IPS_TESTS_TESTING_METRICS_LINES_H_
#define IPS_TESTS_TESTING_METRICS_LINES_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/metrics_line.h"

namespace ips {

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

#endif  // IPS_TESTS_TESTING_METRICS_LINES_H_
