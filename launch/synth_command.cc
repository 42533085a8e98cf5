// `ips data synth`: writes a synthetic behaviour stream with planted structure (worker/synth.h)
// as the canonical event log, plus its ground-truth JSON.
#include <iostream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/progress.h"
#include "common/result_line.h"
#include "launch/commands.h"
#include "worker/synth.h"

namespace ips {
namespace {

void DeclareFlags(FlagSet* f) {
  const SynthOptions d;
  f->Required("output",
              "event log path; '.gz' suffix = gzip; '-' = stdout (RESULT then goes to "
              "stderr)");
  f->String("truth", "",
            "ground-truth JSON path (default <output>.truth.json; 'none' = skip; "
            "skipped for '-' unless given)");
  f->Int("events", d.events, "number of events");
  f->Int("users", static_cast<int64_t>(d.users), "number of users (ids 1..users = activity rank)");
  f->Int("items", static_cast<int64_t>(d.items), "domain-0 items (ids 1..items)");
  f->Int("categories", static_cast<int64_t>(d.categories),
         "categories (contiguous equal item ranges; ids 1..C, domain 1: C+1..2C)");
  f->Int("domain1_items", static_cast<int64_t>(d.domain1_items),
         "domain-1 items (ids items+1..items+domain1-items); 0 = max(items/10, categories)");
  f->Double("domain1_fraction", d.domain1_fraction, "probability that an event is in domain 1");
  f->Double("item_alpha", d.item_alpha, "Zipf exponent of item popularity within a category");
  f->Double("category_alpha", d.category_alpha, "Zipf exponent of category popularity");
  f->Double("user_alpha", d.user_alpha, "Zipf exponent of user activity (0 = uniform)");
  f->Int("min_interests", d.min_interests, "fewest interest categories per user");
  f->Int("max_interests", d.max_interests, "most interest categories per user (<= 8)");
  f->Double("noise", d.noise, "probability that an event ignores the user's interests");
  f->Double("drift_at", d.drift_at,
            "planted drift at this fraction of the stream: interests replaced by disjoint ones "
            "(0 = none)");
  f->Double("drift_users", d.drift_users, "fraction of users the planted drift affects");
  f->Double("drift_rate", d.drift_rate,
            "gradual drift: replacements of each interest slot over the whole stream");
  f->Double("cold_users", d.cold_users, "fraction of users that only appear late (<= 0.9)");
  f->Double("cold_users_after", d.cold_users_after,
            "cold users start uniformly in [this, 1) of the stream");
  f->Double("cold_items", d.cold_items, "fraction of items introduced late (<= 0.9)");
  f->Double("cold_items_after", d.cold_items_after,
            "cold items start uniformly in [this, 1) of the stream");
  f->Double("click_prob", d.click_prob, "probability of action click (else pv)");
  f->Double("cart_prob", d.cart_prob, "probability of action cart");
  f->Double("fav_prob", d.fav_prob, "probability of action fav");
  f->Double("buy_prob", d.buy_prob, "probability of action buy");
  f->Double("noise_engagement", d.noise_engagement,
            "action probabilities are multiplied by this on noise events");
  f->Int("start_time", d.start_time, "timestamp of the first event (Unix seconds)");
  f->Int("duration_s", d.duration_s, "seconds the stream spans");
  f->Int("seed", static_cast<int64_t>(d.seed), "random seed (>= 0): same seed, same bytes");
  f->Int("gzip_level", 1, "gzip level for a .gz output (0-9)");
  f->Int("truth_sample", 100, "users (ids 1..N, plus N cold users) listed in the truth file");
}

// Integer flags that must be positive before they are cast to unsigned.
Status ReadOptions(const FlagSet& f, SynthOptions* o) {
  if (f.GetInt("domain1_items") < 0) return InvalidArgumentError("--domain1_items must be >= 0");
  for (const char* name : {"events", "users", "items", "categories"}) {
    if (f.GetInt(name) < 1)
      return InvalidArgumentError(std::string("--") + name + " must be >= 1, got " +
                                  std::to_string(f.GetInt(name)));
  }
  for (const char* name : {"min_interests", "max_interests"}) {
    if (f.GetInt(name) < 1 || f.GetInt(name) > kSynthMaxInterests)
      return InvalidArgumentError(std::string("--") + name + " must be in [1, " +
                                  std::to_string(kSynthMaxInterests) + "]");
  }
  if (f.GetInt("gzip_level") < 0 || f.GetInt("gzip_level") > 9)
    return InvalidArgumentError("--gzip_level must be in [0, 9]");
  if (f.GetInt("truth_sample") < 0) return InvalidArgumentError("--truth_sample must be >= 0");
  // A negative seed would silently become a huge unsigned one (-1 -> 2^64-1).
  if (f.GetInt("seed") < 0)
    return InvalidArgumentError("--seed must be >= 0, got " + std::to_string(f.GetInt("seed")));
  o->events = f.GetInt("events");
  o->users = static_cast<uint64_t>(f.GetInt("users"));
  o->items = static_cast<uint64_t>(f.GetInt("items"));
  o->categories = static_cast<uint64_t>(f.GetInt("categories"));
  o->domain1_items = static_cast<uint64_t>(f.GetInt("domain1_items"));
  o->domain1_fraction = f.GetDouble("domain1_fraction");
  o->item_alpha = f.GetDouble("item_alpha");
  o->category_alpha = f.GetDouble("category_alpha");
  o->user_alpha = f.GetDouble("user_alpha");
  o->min_interests = static_cast<int>(f.GetInt("min_interests"));
  o->max_interests = static_cast<int>(f.GetInt("max_interests"));
  o->noise = f.GetDouble("noise");
  o->drift_at = f.GetDouble("drift_at");
  o->drift_users = f.GetDouble("drift_users");
  o->drift_rate = f.GetDouble("drift_rate");
  o->cold_users = f.GetDouble("cold_users");
  o->cold_users_after = f.GetDouble("cold_users_after");
  o->cold_items = f.GetDouble("cold_items");
  o->cold_items_after = f.GetDouble("cold_items_after");
  o->click_prob = f.GetDouble("click_prob");
  o->cart_prob = f.GetDouble("cart_prob");
  o->fav_prob = f.GetDouble("fav_prob");
  o->buy_prob = f.GetDouble("buy_prob");
  o->noise_engagement = f.GetDouble("noise_engagement");
  o->start_time = f.GetInt("start_time");
  o->duration_s = f.GetInt("duration_s");
  o->seed = static_cast<uint64_t>(f.GetInt("seed"));
  IPS_RETURN_IF_ERROR(ValidateSynthOptions(*o));
  *o = ResolveSynthOptions(*o);
  return Status::Ok();
}

}  // namespace

int RunSynthCommand(const std::vector<std::string>& args) {
  FlagSet flags("data synth");
  DeclareFlags(&flags);
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout
          << "Writes a synthetic event log (user item category timestamp action domain) with\n"
             "planted interests, drift, two domains and cold start; see worker/synth.h.\n"
          << flags.Usage();
      return kExitOk;
    }
  }
  SynthOptions o;
  Status st = flags.Parse(args);
  if (st.ok() && !flags.positional().empty())
    st = InvalidArgumentError("unexpected argument '" + flags.positional()[0] + "'");
  if (st.ok()) st = ReadOptions(flags, &o);
  if (!st.ok()) {
    // FlagSet's messages already name the command.
    const bool named = st.message().rfind("ips ", 0) == 0;
    std::cerr << (named ? "" : "ips data synth: ") << st.message() << "\n" << flags.Usage();
    return kExitUsage;
  }
  const std::string output = flags.GetString("output");
  std::string truth = flags.GetString("truth");
  if (truth.empty() && output != "-") truth = output + ".truth.json";
  if (truth == "none") truth.clear();

  ProgressLine progress("synth", o.events, "events");
  SynthStats stats;
  st = WriteSynthEvents(
      o, output, truth, static_cast<int>(flags.GetInt("gzip_level")), flags.GetInt("truth_sample"),
      [&](int64_t done) { progress.Update(done); }, &stats);
  if (!st.ok()) {
    std::cerr << "\nips data synth: " << st.message() << "\n";
    return kExitError;
  }
  progress.Finish();
  const uint64_t items = o.items + (o.domain1_fraction > 0 ? o.domain1_items : 0);
  ResultLine result("data_synth");
  result.Add("events", stats.events)
      .Add("users", static_cast<int64_t>(o.users))
      .Add("items", static_cast<int64_t>(items))
      .Add("categories", static_cast<int64_t>(o.categories * (o.domain1_fraction > 0 ? 2 : 1)))
      .Add("domain1_events", stats.domain_events[1])
      .Add("bytes", stats.bytes)
      .Add("seconds", stats.seconds)
      .Add("events_per_s", stats.seconds > 0 ? stats.events / stats.seconds : 0.0)
      .Add("output", output)
      .Add("truth", truth.empty() ? std::string("none") : truth);
  if (output == "-") {
    // stdout carries the event log: the RESULT line must not end up inside it.
    std::cerr << result.str() << "\n";
  } else {
    result.Print();
  }
  return kExitOk;
}

}  // namespace ips
