// The canonical behaviour event: what every converter reads a dataset into, what `ips data synth`
// generates, and what streaming training consumes.
//
// Event log text format (`--format events`, also written by `ips data synth`), one event a line,
// tab-separated, no header, gzip allowed:
//   user \t item \t category \t timestamp \t action \t domain
// user/item/category are unsigned 64-bit ids (0 is reserved for padding and never a real id),
// timestamp is signed Unix seconds (or any monotone clock), action is a name from ActionName(),
// domain is a small unsigned integer (0 = main domain).
#ifndef IPS_WORKER_EVENTS_H_
#define IPS_WORKER_EVENTS_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace ips {

enum class Action : uint8_t {
  kView = 0,   // page view / impression with interaction (Taobao "pv")
  kClick = 1,
  kCart = 2,
  kFav = 3,
  kBuy = 4,
  kRate = 5,   // explicit rating (MovieLens) or review (Amazon)
};

inline const char* ActionName(Action a) {
  switch (a) {
    case Action::kView: return "pv";
    case Action::kClick: return "click";
    case Action::kCart: return "cart";
    case Action::kFav: return "fav";
    case Action::kBuy: return "buy";
    case Action::kRate: return "rate";
  }
  return "?";
}

inline std::optional<Action> ParseAction(std::string_view s) {
  if (s == "pv") return Action::kView;
  if (s == "click") return Action::kClick;
  if (s == "cart") return Action::kCart;
  if (s == "fav") return Action::kFav;
  if (s == "buy") return Action::kBuy;
  if (s == "rate") return Action::kRate;
  return std::nullopt;
}

struct Event {
  uint64_t user = 0;
  uint64_t item = 0;
  uint64_t category = 0;
  int64_t timestamp = 0;
  Action action = Action::kView;
  uint8_t domain = 0;
};

}  // namespace ips

#endif  // IPS_WORKER_EVENTS_H_
