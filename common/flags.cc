#include "common/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

namespace ips {

void FlagSet::Declare(const std::string& name, Kind kind, std::string value, std::string help,
                      bool required) {
  if (flags_.count(name)) {
    std::cerr << "FlagSet: flag --" << name << " declared twice" << std::endl;
    std::abort();
  }
  Flag f;
  f.kind = kind;
  f.default_value = value;
  f.value = std::move(value);
  f.help = std::move(help);
  f.required = required;
  flags_[name] = std::move(f);
  order_.push_back(name);
}

void FlagSet::String(const std::string& name, std::string d, std::string help) {
  Declare(name, Kind::kString, std::move(d), std::move(help), false);
}
void FlagSet::Int(const std::string& name, int64_t d, std::string help) {
  Declare(name, Kind::kInt, std::to_string(d), std::move(help), false);
}
void FlagSet::Double(const std::string& name, double d, std::string help) {
  Declare(name, Kind::kDouble, FormatNumber(d), std::move(help), false);
}
void FlagSet::Bool(const std::string& name, std::string help) {
  Declare(name, Kind::kBool, "false", std::move(help), false);
}
void FlagSet::Repeated(const std::string& name, std::string help) {
  Declare(name, Kind::kRepeated, "", std::move(help), false);
}
void FlagSet::Required(const std::string& name, std::string help) {
  Declare(name, Kind::kString, "", std::move(help), true);
}

Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      if (!arg.empty() && arg[0] == '-' && arg != "-")
        return InvalidArgumentError("ips " + command_ + ": unknown flag '" + arg + "'");
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end())
      return InvalidArgumentError("ips " + command_ + ": unknown flag '--" + name + "'");
    Flag& f = it->second;
    if (f.kind == Kind::kBool) {
      if (has_value && value != "true" && value != "false")
        return InvalidArgumentError("flag --" + name + ": expected true or false, got '" + value +
                                    "'");
      f.value = has_value ? value : "true";
      f.set = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return InvalidArgumentError("flag --" + name + ": missing value");
      value = args[++i];
    }
    if (f.kind == Kind::kInt) {
      char* end = nullptr;
      errno = 0;
      std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno != 0)
        return InvalidArgumentError("flag --" + name + ": expected an integer, got '" + value +
                                    "'");
    } else if (f.kind == Kind::kDouble) {
      char* end = nullptr;
      std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0')
        return InvalidArgumentError("flag --" + name + ": expected a number, got '" + value + "'");
    }
    if (f.kind == Kind::kRepeated) {
      f.values.push_back(value);
    } else {
      // Which of two values was meant is anyone's guess (a script's default and the user's
      // override?): refused rather than the last one taken silently.
      if (f.set && f.value != value)
        return InvalidArgumentError("flag --" + name + " given twice, as '" + f.value +
                                    "' and as '" + value + "': give it once");
      f.value = value;
    }
    f.set = true;
  }
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    if (f.required && !f.set)
      return InvalidArgumentError("ips " + command_ + ": missing required flag --" + name);
  }
  return Status::Ok();
}

const FlagSet::Flag& FlagSet::Get(const std::string& name, Kind kind) const {
  auto it = flags_.find(name);
  if (it == flags_.end() || (it->second.kind != kind && !(kind == Kind::kString))) {
    std::cerr << "FlagSet: flag --" << name << " not declared with that type" << std::endl;
    std::abort();
  }
  return it->second;
}

std::string FlagSet::GetString(const std::string& name) const {
  return Get(name, Kind::kString).value;
}
int64_t FlagSet::GetInt(const std::string& name) const {
  return std::strtoll(Get(name, Kind::kInt).value.c_str(), nullptr, 10);
}
double FlagSet::GetDouble(const std::string& name) const {
  return std::strtod(Get(name, Kind::kDouble).value.c_str(), nullptr);
}
bool FlagSet::GetBool(const std::string& name) const {
  return Get(name, Kind::kBool).value == "true";
}
const std::vector<std::string>& FlagSet::GetRepeated(const std::string& name) const {
  return Get(name, Kind::kRepeated).values;
}
bool FlagSet::WasSet(const std::string& name) const {
  auto it = flags_.find(name);
  return it != flags_.end() && it->second.set;
}

std::string FormatNumber(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // 17 significant digits always read back; fewer usually do.
  char buf[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string FlagSet::Usage() const {
  std::ostringstream os;
  os << "usage: ips " << command_ << " [flags]\n";
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    os << "  --" << name;
    if (f.kind != Kind::kBool) os << " VALUE";
    os << "  " << f.help;
    if (f.required) {
      os << " (required)";
    } else if (f.kind != Kind::kBool && f.kind != Kind::kRepeated && !f.default_value.empty()) {
      os << " (default " << f.default_value << ")";
    } else if (f.kind == Kind::kRepeated) {
      os << " (repeatable)";
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace ips
