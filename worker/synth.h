// Synthetic behaviour streams with planted, recomputable structure (`ips data synth`).
//
// This module owns the generative model of synthetic users, items and events, the streaming writer
// of the canonical event log (worker/events.h) and the ground-truth file written beside it. Later
// tests check models against the planted structure (interest modelling, interest tracking under
// drift, cross-domain transfer, cold start), so every planted fact is either a pure function of
// (options, seed) exposed by SynthModel, or listed in the truth file.
//
// The model (index i = 0..events-1 is an event's position in the stream, x = i / events):
//   * Items and categories. Categories are indices c = 0..categories-1 with ids c+1 (domain 0)
//     and categories+c+1 (domain 1). Domain d's items are the contiguous id range
//     [first_d, first_d + n_d), first_0 = 1, n_0 = items, first_1 = items+1, n_1 = domain1_items;
//     category c owns [first_d + floor(c n_d / C), first_d + floor((c+1) n_d / C)), and its items
//     are ranked by popularity in id order: rank r is drawn with P ∝ (r+1)^-item_alpha.
//   * Users 1..users. Each event picks its user with P ∝ user^-user_alpha (id = activity rank).
//     User u has k_u = min_interests + Mix(u) % (max_interests-min_interests+1) interest slots
//     with weights ∝ 1/(slot+1); each slot holds a distinct category drawn with
//     P ∝ (c+1)^-category_alpha (category 0 is the most popular).
//   * An event picks a slot by weight and an item of that slot's category by the within-category
//     Zipf; with probability `noise` it instead picks a category from the global category Zipf.
//     The domain is 1 with probability domain1_fraction; both domains share the users and their
//     interests (interest category c means category c of the event's domain).
//   * Drift. Planted: at index floor(drift_at * events) every user selected with probability
//     drift_users has all slots replaced by categories disjoint from the set it would have had
//     without the drift (= its pre-drift set when drift_rate = 0). Gradual: slot j
//     of user u is replaced whenever floor(drift_rate * x + phase(u, j)) increases, i.e.
//     drift_rate times over the stream at a per-slot random phase.
//   * Cold start. A user selected with probability cold_users (user 1 never is) is active from
//     index floor(events * (cold_users_after + (1 - cold_users_after) * h(u))); events pick
//     users by rejection. Likewise an item selected with probability cold_items (never a
//     category's rank-0 item) exists from its own start index.
//   * Actions: pv, or click/cart/fav/buy with their probabilities (times noise_engagement for
//     noise events: engagement is a planted signal of interest). Timestamps are
//     start_time + floor(i * duration_s / events): non-decreasing in stream order.
//
// Memory: O(1) in events and users. There is no per-user or per-item state (interests, drift and
// cold start are hashes of the ids); the only tables are alias tables of at most 65536 entries
// (8 bytes each) for the six Zipf samplers (larger ranges use rejection-inversion sampling), at
// most 3.2 MB, a cache of interest sets (48 bytes x min(users, 2^17), at most 6 MiB), a 1 MiB
// output buffer and the zlib stream. Random numbers come from one Rng per chunk of kSynthChunk
// events seeded by (seed, chunk), so a chunk can be regenerated on its own (SynthGenerator::Seek).
#ifndef IPS_WORKER_SYNTH_H_
#define IPS_WORKER_SYNTH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/status.h"
#include "worker/events.h"

namespace ips {

constexpr int kSynthMaxInterests = 8;
constexpr int64_t kSynthChunk = 1 << 16;

// Every knob of the generator; defaults are those of `ips data synth`.
struct SynthOptions {
  int64_t events = 1000000;
  uint64_t users = 100000;
  uint64_t items = 1000000;  // domain-0 items
  uint64_t categories = 1000;
  uint64_t domain1_items = 0;   // domain-1 items; 0 = max(items / 10, categories)
  double item_alpha = 1.1;      // Zipf exponent of item rank within a category
  double category_alpha = 0.8;  // Zipf exponent of category popularity
  double user_alpha = 0.5;      // Zipf exponent of user activity (0 = uniform)
  int min_interests = 2;
  int max_interests = 4;
  double noise = 0.1;             // probability that an event ignores the user's interests
  double drift_at = 0.5;          // planted drift at this stream fraction; 0 = none
  double drift_users = 1.0;       // fraction of users whose interests the planted drift replaces
  double drift_rate = 0;          // gradual drift: replacements per slot over the whole stream
  double domain1_fraction = 0.2;  // probability that an event is in domain 1
  double cold_users = 0.1;        // fraction of users that start late
  double cold_users_after = 0.5;  // cold users start uniformly in [this, 1) of the stream
  double cold_items = 0.1;        // fraction of items introduced late
  double cold_items_after = 0.5;
  double click_prob = 0.10;
  double cart_prob = 0.03;
  double fav_prob = 0.02;
  double buy_prob = 0.02;
  double noise_engagement = 0.25;  // action probabilities are scaled by this on noise events
  int64_t start_time = 1700000000;
  int64_t duration_s = 30 * 86400;
  uint64_t seed = 1;
};

// The options with derived defaults filled in (domain1_items = 0 becomes max(items/10,
// categories)); SynthModel::Create applies it, callers that print options use it too.
SynthOptions ResolveSynthOptions(SynthOptions o);

// INVALID_ARGUMENT naming the first bad option (ranges, probabilities, too few categories or
// items for the requested interests and domains).
Status ValidateSynthOptions(const SynthOptions& o);

// What the generator did for one event, for tests that check the planted structure directly.
struct SynthEventTruth {
  int64_t index = 0;
  bool noise = false;
  int slot = -1;                // interest slot used (-1 for noise)
  uint32_t category_index = 0;  // 0-based category index (same meaning in both domains)
  uint64_t item_rank = 0;       // rank within the category (0 = most popular)
};

// Samples k in [0, n) with P(k) ∝ (k+1)^-alpha: an alias table over the first min(n, 65536)
// ranks and, beyond them, rejection-inversion (Hörmann & Derflinger 1996), exact and O(1) memory;
// the head/tail split uses the tail's mass by Euler-Maclaurin (error < 1e-20). Thread-compatible.
class ZipfSampler {
 public:
  ZipfSampler() = default;
  ZipfSampler(uint64_t n, double alpha);
  uint64_t Sample(Rng& rng) const;
  uint64_t n() const { return n_; }
  // P(k) for k in [0, n), computed exactly (O(n) the first call; for tests and the truth file).
  double Probability(uint64_t k) const;

 private:
  double H(double x) const;
  double HInverse(double x) const;
  uint64_t n_ = 1;
  double alpha_ = 0;
  struct AliasCell {
    uint32_t keep;  // keep rank k when the 32-bit coin is below this, else take alias
    uint32_t alias;
  };
  std::vector<AliasCell> table_;  // alias table of the head ranks
  uint64_t tail_first_ = 0;       // 1-based first tail rank; 0 = no tail
  double p_head_ = 1, h_lo_ = 0, h_n_ = 0;
};

// The pure functions of the model: which category an item has, who is cold, what a user's
// interests are at a stream position. Immutable after Create(); thread-safe.
class SynthModel {
 public:
  static StatusOr<std::unique_ptr<SynthModel>> Create(const SynthOptions& o);
  const SynthOptions& options() const { return o_; }

  // Domain d's item-id range of category index c: [first, first + count).
  uint64_t CategoryFirstItem(int domain, uint32_t c) const;
  uint64_t CategorySize(int domain, uint32_t c) const;
  // Category id (>= 1) written for category index c in `domain`.
  uint64_t CategoryId(int domain, uint32_t c) const {
    return domain == 0 ? c + 1 : o_.categories + c + 1;
  }
  // Domain, category index and popularity rank of an item id; false if the id is no item.
  bool LocateItem(uint64_t item, int* domain, uint32_t* c, uint64_t* rank) const;

  int NumInterests(uint64_t user) const;
  // Weight of slot j among k slots (∝ 1/(j+1), summing to 1).
  double SlotWeight(int k, int j) const;
  bool DriftsAtPlantedPoint(uint64_t user) const;
  // Writes the user's interest category indices, slot order, at stream index `index` into
  // out[0, k) (out needs kSynthMaxInterests entries) and returns k. `count` >= 0 computes only
  // the first `count` slots (slot j depends only on slots < j).
  int Interests(uint64_t user, int64_t index, uint32_t* out, int count = -1) const;
  // An index > `index` before which Interests(user, ·) cannot change (a lower bound of the next
  // change: planted drift or a gradual replacement), for caching.
  int64_t InterestsValidUntil(uint64_t user, int64_t index) const;
  // Cumulative slot weight: P(slot <= j) for a user with k slots.
  double SlotCdf(int k, int j) const { return slot_cdf_[k][j]; }
  // First stream index at which the user / item may appear (0 when not cold-start).
  int64_t UserStartIndex(uint64_t user) const;
  int64_t ItemStartIndex(uint64_t item) const;
  // The same for an item whose rank within its category is known (no division).
  int64_t ItemStartIndex(uint64_t item, uint64_t rank) const;
  // Planted drift index (events when there is none).
  int64_t DriftIndex() const { return drift_index_; }
  int64_t TimestampAt(int64_t index) const;

  const ZipfSampler& category_sampler() const { return category_zipf_; }
  // The within-category rank sampler for a category of `size` items.
  const ZipfSampler& RankSampler(uint64_t size) const;
  const ZipfSampler& user_sampler() const { return user_zipf_; }

 private:
  explicit SynthModel(const SynthOptions& o);
  // Slot categories at the given per-slot generations; `exclude` (may be null) are categories
  // the slots must avoid (the pre-drift set).
  void DrawSlots(uint64_t user, int k, const uint32_t* gens, uint32_t epoch,
                 const uint32_t* exclude, int n_exclude, uint32_t* out) const;
  double Hash01(uint64_t salt, uint64_t a, uint64_t b = 0) const;

  SynthOptions o_;
  int64_t drift_index_ = 0;
  ZipfSampler category_zipf_, user_zipf_;
  // Category sizes in a domain are floor(n/C) or floor(n/C)+1: one sampler per distinct size.
  std::vector<ZipfSampler> rank_zipf_;
  double slot_cdf_[kSynthMaxInterests + 1][kSynthMaxInterests] = {};
};

// Generates the stream in order. Not thread-safe; the model must outlive it.
class SynthGenerator {
 public:
  explicit SynthGenerator(const SynthModel* model);
  // Fills *e with event index() and advances; false when all events are out. `truth` may be null.
  bool Next(Event* e, SynthEventTruth* truth = nullptr);
  int64_t index() const { return index_; }
  // Continues the stream from event `index` (0 <= index <= events) without generating the events
  // before its chunk: the next Next() returns exactly what a generator run from 0 would.
  void Seek(int64_t index);

 private:
  // Direct-mapped cache of users' interest sets, indexed by user id (= activity rank, so the most
  // active users never collide): recomputing a set is most of an event's cost.
  static constexpr uint64_t kMaxCacheSize = 1 << 17;
  struct CacheEntry {
    uint64_t user = 0;  // 0 = empty (user ids start at 1)
    int64_t until = 0;  // valid for stream indices below this
    uint32_t cats[kSynthMaxInterests];
  };
  const SynthModel* model_;
  const SynthOptions& o_;
  int64_t index_ = 0;
  Rng rng_;
  std::vector<CacheEntry> cache_;
  uint64_t cache_mask_ = 0;
};

struct SynthStats {
  int64_t events = 0;
  int64_t domain_events[2] = {0, 0};
  int64_t noise_events = 0;
  int64_t action_events[6] = {0, 0, 0, 0, 0, 0};
  int64_t bytes = 0;  // uncompressed bytes of the event log
  double seconds = 0;
};

// Writes the event log to `path` (`-` = stdout; a `.gz` suffix = gzip at `gzip_level`) and, when
// `truth_path` is non-empty, the ground-truth JSON (options, derived ranges, counts, a sample of
// `truth_sample_users` users with their interests before/after drift). `progress(done)` is called
// about every kSynthChunk events (may be empty). Returns INVALID_ARGUMENT for bad options and
// INTERNAL/NOT_FOUND naming the path when a file cannot be opened or written.
Status WriteSynthEvents(const SynthOptions& o, const std::string& path,
                        const std::string& truth_path, int gzip_level, int64_t truth_sample_users,
                        const std::function<void(int64_t)>& progress, SynthStats* stats);

// The truth file's JSON (also used by WriteSynthEvents).
std::string SynthTruthJson(const SynthModel& model, const SynthStats& stats, int64_t sample_users);

}  // namespace ips

#endif  // IPS_WORKER_SYNTH_H_
