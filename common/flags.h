// FlagSet: the command-line flags of one `ips` subcommand.
//
// Each subcommand declares its flags (name, help, default) and parses argv. Accepts `--name value`
// and `--name=value`; boolean flags take no value (`--fp16`). Repeatable flags (`--set a=b`)
// collect every occurrence; any other flag given twice with different values is refused. An
// unknown flag, a missing value or a value of the wrong type is an INVALID_ARGUMENT naming the
// flag; the caller prints Usage() and exits 2.
#ifndef IPS_COMMON_FLAGS_H_
#define IPS_COMMON_FLAGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace ips {

class FlagSet {
 public:
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  // Declaration. Names are given without dashes. Declaring a name twice is a programmer error.
  void String(const std::string& name, std::string default_value, std::string help);
  void Int(const std::string& name, int64_t default_value, std::string help);
  void Double(const std::string& name, double default_value, std::string help);
  void Bool(const std::string& name, std::string help);  // default false; present means true
  void Repeated(const std::string& name, std::string help);
  // A flag that must be given.
  void Required(const std::string& name, std::string help);

  // Parses args (without the program and subcommand names). Positional arguments are collected
  // into positional(). Returns INVALID_ARGUMENT on unknown flags, missing values, bad numbers or
  // missing required flags.
  Status Parse(const std::vector<std::string>& args);

  // Any flag's value as given on the command line (or its default as declared), whatever its
  // kind: "-1" for a number flag given -1, where std::to_string(GetDouble()) says "-1.000000".
  std::string GetString(const std::string& name) const;
  int64_t GetInt(const std::string& name) const;
  double GetDouble(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  const std::vector<std::string>& GetRepeated(const std::string& name) const;
  // True if the flag was given on the command line (not just defaulted).
  bool WasSet(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  // "usage: ips <command> [flags]" followed by one line per flag, with its declared default (never
  // the value given on the command line, which the caller may have just rejected).
  std::string Usage() const;

 private:
  enum class Kind { kString, kInt, kDouble, kBool, kRepeated };
  struct Flag {
    Kind kind;
    std::string value;          // the parsed value, or the default
    std::string default_value;  // as declared: what Usage() shows, whatever was given
    std::vector<std::string> values;
    std::string help;
    bool required = false;
    bool set = false;
  };
  void Declare(const std::string& name, Kind kind, std::string value, std::string help,
               bool required);
  const Flag& Get(const std::string& name, Kind kind) const;

  std::string command_;
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
};

// The shortest decimal text that reads back as `v`: "-1", "0.1", "2.5e-07", "inf", "nan". For
// messages that quote a number (a flag's value, an option checked after parsing): std::to_string
// prints "-1.000000" and rounds 1e-7 to "0.000000".
std::string FormatNumber(double v);

}  // namespace ips

#endif  // IPS_COMMON_FLAGS_H_
