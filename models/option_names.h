// How a model's option checks (the models' Validate*Options, CheckMlpHeadOptions in
// models/layers.h) name an option in an error. A caller may pass `names`: ModelSpecFromConfig
// (worker/model_factory.h) passes the config field paths that set the options
// ("model.num_heads"), so that each check stays the one copy of its rule while its message names
// what the user set. Without `names`, the option at fault is "<Options>.<field>"
// ("SasrecOptions.num_heads") and one a message mentions its bare field.
#ifndef IPS_MODELS_OPTION_NAMES_H_
#define IPS_MODELS_OPTION_NAMES_H_

#include <functional>
#include <sstream>
#include <string>

#include "common/status.h"

namespace ips::models {

using OptionNames = std::function<std::string(const std::string& field)>;

// The option at fault: the caller's name for `field`, else "<options>.<field>".
inline std::string OptionAtFault(const OptionNames& names, const std::string& options,
                                 const std::string& field) {
  return names ? names(field) : options + "." + field;
}

// An option a message mentions: the caller's name for `field`, else the bare field.
inline std::string MentionedOption(const OptionNames& names, const std::string& field) {
  return names ? names(field) : field;
}

// INVALID_ARGUMENT "<the option at fault>: <what>".
inline Status BadOption(const OptionNames& names, const std::string& options,
                        const std::string& field, const std::string& what) {
  return InvalidArgumentError(OptionAtFault(names, options, field) + ": " + what);
}

// A number as the messages show it (shortest of 6 significant digits: 0.1, not 0.100000).
inline std::string OptionNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace ips::models

#endif  // IPS_MODELS_OPTION_NAMES_H_
