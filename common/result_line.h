// ResultLine: the one machine-readable line that every benchmark and every `ips` command prints
// last on stdout: `RESULT <name> key=value key=value ...`.
#ifndef IPS_COMMON_RESULT_LINE_H_
#define IPS_COMMON_RESULT_LINE_H_

#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

namespace ips {

class ResultLine {
 public:
  explicit ResultLine(const std::string& name) { os_ << "RESULT " << name; }
  ResultLine& Add(const std::string& key, const std::string& value) {
    os_ << ' ' << key << '=' << value;
    return *this;
  }
  ResultLine& Add(const std::string& key, const char* value) { return Add(key, std::string(value)); }
  ResultLine& Add(const std::string& key, int64_t value) { return Add(key, std::to_string(value)); }
  ResultLine& Add(const std::string& key, int value) { return Add(key, std::to_string(value)); }
  ResultLine& Add(const std::string& key, uint64_t value) { return Add(key, std::to_string(value)); }
  ResultLine& Add(const std::string& key, double value) {
    std::ostringstream v;
    v.precision(6);
    v << value;
    return Add(key, v.str());
  }
  std::string str() const { return os_.str(); }
  // Prints the line to stdout and flushes.
  void Print() const {
    std::printf("%s\n", os_.str().c_str());
    std::fflush(stdout);
  }

 private:
  std::ostringstream os_;
};

}  // namespace ips

#endif  // IPS_COMMON_RESULT_LINE_H_
