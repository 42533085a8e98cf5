#include "worker/synth.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/flags.h"
#include "common/timer.h"
#include "worker/record_parsers.h"

namespace ips {
namespace {

// Salts keep the hashes of different planted facts independent of each other.
constexpr uint64_t kSaltInterests = 0x1a7e5e57ULL;
constexpr uint64_t kSaltNumInterests = 0x2b0c0a7dULL;
constexpr uint64_t kSaltDrift = 0x3d21f7a1ULL;
constexpr uint64_t kSaltPhase = 0x4e9c2b13ULL;
constexpr uint64_t kSaltColdUser = 0x5f0d3c29ULL;
constexpr uint64_t kSaltColdUserStart = 0x60ae4d37ULL;
constexpr uint64_t kSaltColdItem = 0x71bf5e41ULL;
constexpr uint64_t kSaltColdItemStart = 0x82c06f53ULL;
constexpr uint64_t kSaltChunk = 0x93d18065ULL;

constexpr uint64_t kAliasMax = 65536;
// Rejection loops (distinct interests, cold users/items) give up after this many draws and fall
// back to a deterministic choice, so no setting can make the generator spin.
constexpr int kMaxRejections = 64;

double Unit(uint64_t h) { return (h >> 11) * (1.0 / 9007199254740992.0); }

// log1p(x)/x and expm1(x)/x, accurate near 0 (from the rejection-inversion paper's reference code).
double Helper1(double x) {
  return std::fabs(x) > 1e-8 ? std::log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}
double Helper2(double x) {
  return std::fabs(x) > 1e-8 ? std::expm1(x) / x
                             : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
}

uint64_t FloorMulDiv(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t ab;
  if (!__builtin_mul_overflow(a, b, &ab)) return ab / c;  // the common case: no 128-bit divide
  return static_cast<uint64_t>(static_cast<unsigned __int128>(a) * b / c);
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ZipfSampler

ZipfSampler::ZipfSampler(uint64_t n, double alpha) : n_(n), alpha_(alpha) {
  if (n_ <= 1 || alpha_ == 0) return;  // uniform: no table
  // Vose's alias method over the head ranks [0, head): O(1) draws from a table built once.
  const uint64_t head = std::min(n_, kAliasMax);
  std::vector<double> scaled(head);
  double z_head = 0;
  for (uint64_t k = 0; k < head; ++k) z_head += std::pow(static_cast<double>(k + 1), -alpha_);
  for (uint64_t k = 0; k < head; ++k)
    scaled[k] = std::pow(static_cast<double>(k + 1), -alpha_) / z_head * static_cast<double>(head);
  std::vector<double> prob(head, 1.0);
  std::vector<uint32_t> alias(head);
  std::vector<uint32_t> small, large;
  for (uint64_t k = 0; k < head; ++k) {
    alias[k] = static_cast<uint32_t>(k);
    (scaled[k] < 1.0 ? small : large).push_back(static_cast<uint32_t>(k));
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back(), l = large.back();
    small.pop_back();
    large.pop_back();
    prob[s] = scaled[s];
    alias[s] = l;
    scaled[l] = (scaled[l] + scaled[s]) - 1.0;
    (scaled[l] < 1.0 ? small : large).push_back(l);
  }
  // One 8-byte cell per rank, so a draw touches one cache line: the keep-probability as a 32-bit
  // threshold (resolution 2^-32) and the alias.
  table_.resize(head);
  for (uint64_t k = 0; k < head; ++k) {
    const double t = std::ldexp(prob[k], 32);
    table_[k].keep = t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t);
    table_[k].alias = prob[k] >= 1.0 ? static_cast<uint32_t>(k) : alias[k];
  }
  // Leftovers (numerical round-off) keep probability 1.
  if (head == n_) return;
  // The tail (1-based ranks head+1..n) by rejection-inversion; its mass by Euler-Maclaurin, whose
  // next term at rank 65537 is below 1e-20 of the total.
  const double a = static_cast<double>(head + 1), b = static_cast<double>(n_);
  auto f = [&](double x) { return std::pow(x, -alpha_); };
  auto f1 = [&](double x) { return -alpha_ * std::pow(x, -alpha_ - 1); };
  auto f3 = [&](double x) {
    return -alpha_ * (alpha_ + 1) * (alpha_ + 2) * std::pow(x, -alpha_ - 3);
  };
  const double z_tail =
      H(b) - H(a) + (f(a) + f(b)) / 2 + (f1(b) - f1(a)) / 12 - (f3(b) - f3(a)) / 720;
  p_head_ = z_head / (z_head + z_tail);
  tail_first_ = head + 1;
  h_lo_ = H(a + 0.5) - f(a);
  h_n_ = H(b + 0.5);
}

// Integral of x^-alpha, (x^(1-alpha) - 1) / (1 - alpha), written to stay accurate at alpha = 1.
double ZipfSampler::H(double x) const {
  const double log_x = std::log(x);
  return Helper2((1.0 - alpha_) * log_x) * log_x;
}

double ZipfSampler::HInverse(double x) const {
  double t = x * (1.0 - alpha_);
  if (t < -1.0) t = -1.0;  // round-off guard
  return std::exp(Helper1(t) * x);
}

uint64_t ZipfSampler::Sample(Rng& rng) const {
  if (n_ <= 1) return 0;
  if (alpha_ == 0) return rng.UniformInt(n_);
  if (tail_first_ == 0 || rng.Uniform() < p_head_) {
    // The high bits pick the cell (multiply-shift), the low 32 bits are the coin.
    const uint64_t r = rng.Next();
    const uint64_t k =
        static_cast<uint64_t>((static_cast<unsigned __int128>(r) * table_.size()) >> 64);
    const AliasCell cell = table_[k];
    return static_cast<uint32_t>(r) < cell.keep ? k : cell.alias;
  }
  // u uniform on (h_lo, h_n]; rank k owns [H(k+0.5) - k^-alpha, H(k+0.5)], a subset of the
  // u's that round to k because x^-alpha is convex.
  const double lo = static_cast<double>(tail_first_), hi = static_cast<double>(n_);
  for (;;) {
    const double u = h_n_ + rng.Uniform() * (h_lo_ - h_n_);
    const double x = HInverse(u);
    double k = std::floor(x + 0.5);
    if (k < lo) k = lo;
    if (k > hi) k = hi;
    if (u >= H(k + 0.5) - std::exp(-alpha_ * std::log(k))) return static_cast<uint64_t>(k) - 1;
  }
}

double ZipfSampler::Probability(uint64_t k) const {
  if (k >= n_) return 0;
  if (alpha_ == 0) return 1.0 / static_cast<double>(n_);
  double z = 0;
  for (uint64_t i = 0; i < n_; ++i) z += std::pow(static_cast<double>(i + 1), -alpha_);
  return std::pow(static_cast<double>(k + 1), -alpha_) / z;
}

// ---------------------------------------------------------------------------------------------
// Options

SynthOptions ResolveSynthOptions(SynthOptions o) {
  if (o.domain1_items == 0) o.domain1_items = std::max<uint64_t>(o.items / 10, o.categories);
  return o;
}

Status ValidateSynthOptions(const SynthOptions& o) {
  auto prob = [](const char* name, double v) -> Status {
    if (!(v >= 0 && v <= 1))
      return InvalidArgumentError(std::string("--") + name + " must be in [0, 1], got " +
                                  FormatNumber(v));
    return Status::Ok();
  };
  auto nonneg = [](const char* name, double v) -> Status {
    if (!(v >= 0 && v <= 100))
      return InvalidArgumentError(std::string("--") + name + " must be in [0, 100], got " +
                                  FormatNumber(v));
    return Status::Ok();
  };
  if (o.events < 1) return InvalidArgumentError("--events must be >= 1");
  if (o.users < 1) return InvalidArgumentError("--users must be >= 1");
  if (o.categories < 1 || o.categories > (1ULL << 31))
    return InvalidArgumentError("--categories must be in [1, 2^31]");
  if (o.min_interests < 1 || o.max_interests > kSynthMaxInterests ||
      o.min_interests > o.max_interests)
    return InvalidArgumentError("need 1 <= --min_interests <= --max_interests <= " +
                                std::to_string(kSynthMaxInterests));
  const uint64_t need_cats = static_cast<uint64_t>(o.max_interests) * (o.drift_at > 0 ? 2 : 1);
  if (o.categories < need_cats)
    return InvalidArgumentError("--categories (" + std::to_string(o.categories) +
                                ") must be >= " + std::to_string(need_cats) +
                                " (--max_interests, twice that with --drift_at) so that a "
                                "user's interests are distinct");
  if (o.items < o.categories)
    return InvalidArgumentError("--items (" + std::to_string(o.items) +
                                ") must be >= --categories (" + std::to_string(o.categories) +
                                "): every category needs an item");
  if (o.domain1_fraction > 0 && o.domain1_items != 0 && o.domain1_items < o.categories)
    return InvalidArgumentError("--domain1_items (" + std::to_string(o.domain1_items) +
                                ") must be >= --categories when --domain1_fraction > 0");
  if (o.items > (1ULL << 62) || o.domain1_items > (1ULL << 62) || o.users > (1ULL << 62))
    return InvalidArgumentError("--users, --items and --domain1_items must be < 2^62");
  IPS_RETURN_IF_ERROR(nonneg("item_alpha", o.item_alpha));
  IPS_RETURN_IF_ERROR(nonneg("category_alpha", o.category_alpha));
  IPS_RETURN_IF_ERROR(nonneg("user_alpha", o.user_alpha));
  IPS_RETURN_IF_ERROR(prob("noise", o.noise));
  if (!(o.drift_at >= 0 && o.drift_at < 1))
    return InvalidArgumentError("--drift_at must be in [0, 1) (0 = no planted drift)");
  IPS_RETURN_IF_ERROR(prob("drift_users", o.drift_users));
  if (!(o.drift_rate >= 0 && o.drift_rate <= 1e6))
    return InvalidArgumentError("--drift_rate must be in [0, 1e6]");
  IPS_RETURN_IF_ERROR(prob("domain1_fraction", o.domain1_fraction));
  if (!(o.cold_users >= 0 && o.cold_users <= 0.9))
    return InvalidArgumentError("--cold_users must be in [0, 0.9]");
  if (!(o.cold_items >= 0 && o.cold_items <= 0.9))
    return InvalidArgumentError("--cold_items must be in [0, 0.9]");
  IPS_RETURN_IF_ERROR(prob("cold_users_after", o.cold_users_after));
  IPS_RETURN_IF_ERROR(prob("cold_items_after", o.cold_items_after));
  IPS_RETURN_IF_ERROR(prob("click_prob", o.click_prob));
  IPS_RETURN_IF_ERROR(prob("cart_prob", o.cart_prob));
  IPS_RETURN_IF_ERROR(prob("fav_prob", o.fav_prob));
  IPS_RETURN_IF_ERROR(prob("buy_prob", o.buy_prob));
  IPS_RETURN_IF_ERROR(prob("noise_engagement", o.noise_engagement));
  if (o.click_prob + o.cart_prob + o.fav_prob + o.buy_prob > 1)
    return InvalidArgumentError(
        "--click_prob + --cart_prob + --fav_prob + --buy_prob must be <= 1");
  if (o.duration_s < 0) return InvalidArgumentError("--duration_s must be >= 0");
  if (o.start_time < -(1LL << 62) || o.start_time > (1LL << 62) || o.duration_s > (1LL << 62))
    return InvalidArgumentError("--start_time and --duration_s must be within +-2^62");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// SynthModel

SynthModel::SynthModel(const SynthOptions& o) : o_(ResolveSynthOptions(o)) {
  drift_index_ =
      o_.drift_at > 0
          ? static_cast<int64_t>(std::floor(o_.drift_at * static_cast<double>(o_.events)))
          : o_.events;
  category_zipf_ = ZipfSampler(o_.categories, o_.category_alpha);
  user_zipf_ = ZipfSampler(o_.users, o_.user_alpha);
  const uint64_t n[2] = {o_.items, std::max<uint64_t>(o_.domain1_items, o_.categories)};
  for (int d = 0; d < 2; ++d) {
    const uint64_t base = n[d] / o_.categories;
    rank_zipf_.emplace_back(base, o_.item_alpha);
    rank_zipf_.emplace_back(base + 1, o_.item_alpha);
  }
  for (int k = 1; k <= kSynthMaxInterests; ++k) {
    double z = 0;
    for (int j = 0; j < k; ++j) z += 1.0 / (j + 1);
    double c = 0;
    for (int j = 0; j < k; ++j) {
      c += 1.0 / (j + 1) / z;
      slot_cdf_[k][j] = c;
    }
    slot_cdf_[k][k - 1] = 1.0;
  }
}

StatusOr<std::unique_ptr<SynthModel>> SynthModel::Create(const SynthOptions& o) {
  IPS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  return std::unique_ptr<SynthModel>(new SynthModel(o));
}

double SynthModel::Hash01(uint64_t salt, uint64_t a, uint64_t b) const {
  return Unit(Mix64(Mix64(Mix64(o_.seed ^ (salt * 0x9e3779b97f4a7c15ULL)) ^ a) + b));
}

uint64_t SynthModel::CategoryFirstItem(int domain, uint32_t c) const {
  const uint64_t n = domain == 0 ? o_.items : o_.domain1_items;
  const uint64_t first = domain == 0 ? 1 : o_.items + 1;
  return first + FloorMulDiv(c, n, o_.categories);
}

uint64_t SynthModel::CategorySize(int domain, uint32_t c) const {
  const uint64_t n = domain == 0 ? o_.items : o_.domain1_items;
  return FloorMulDiv(c + 1ULL, n, o_.categories) - FloorMulDiv(c, n, o_.categories);
}

bool SynthModel::LocateItem(uint64_t item, int* domain, uint32_t* c, uint64_t* rank) const {
  if (item == 0) return false;
  int d = 0;
  uint64_t off = item - 1, n = o_.items;
  if (item > o_.items) {
    if (o_.domain1_fraction <= 0 || item - o_.items > o_.domain1_items) return false;
    d = 1;
    off = item - o_.items - 1;
    n = o_.domain1_items;
  }
  // Largest c with floor(c n / C) <= off.
  uint64_t cat = FloorMulDiv(off + 1, o_.categories, n);
  if (cat >= o_.categories) cat = o_.categories - 1;
  while (cat > 0 && FloorMulDiv(cat, n, o_.categories) > off) --cat;
  while (cat + 1 < o_.categories && FloorMulDiv(cat + 1, n, o_.categories) <= off) ++cat;
  *domain = d;
  *c = static_cast<uint32_t>(cat);
  *rank = off - FloorMulDiv(cat, n, o_.categories);
  return true;
}

const ZipfSampler& SynthModel::RankSampler(uint64_t size) const {
  for (const auto& z : rank_zipf_)
    if (z.n() == size) return z;
  // Sizes are floor(n/C) or floor(n/C)+1 by construction; reaching here is a programmer error.
  std::fprintf(stderr, "SynthModel::RankSampler: no sampler for size %llu\n",
               static_cast<unsigned long long>(size));
  std::abort();
}

int SynthModel::NumInterests(uint64_t user) const {
  const uint64_t span = static_cast<uint64_t>(o_.max_interests - o_.min_interests + 1);
  return o_.min_interests +
         static_cast<int>(Mix64(Mix64(o_.seed ^ kSaltNumInterests) ^ user) % span);
}

double SynthModel::SlotWeight(int k, int j) const {
  return slot_cdf_[k][j] - (j > 0 ? slot_cdf_[k][j - 1] : 0.0);
}

bool SynthModel::DriftsAtPlantedPoint(uint64_t user) const {
  return o_.drift_at > 0 && Hash01(kSaltDrift, user) < o_.drift_users;
}

int64_t SynthModel::UserStartIndex(uint64_t user) const {
  if (o_.cold_users <= 0 || user == 1) return 0;
  if (Hash01(kSaltColdUser, user) >= o_.cold_users) return 0;
  const double f =
      o_.cold_users_after + (1.0 - o_.cold_users_after) * Hash01(kSaltColdUserStart, user);
  return static_cast<int64_t>(std::floor(f * static_cast<double>(o_.events)));
}

int64_t SynthModel::ItemStartIndex(uint64_t item) const {
  if (o_.cold_items <= 0) return 0;
  int d;
  uint32_t c;
  uint64_t rank;
  if (!LocateItem(item, &d, &c, &rank)) return 0;
  return ItemStartIndex(item, rank);
}

int64_t SynthModel::ItemStartIndex(uint64_t item, uint64_t rank) const {
  if (o_.cold_items <= 0 || rank == 0) return 0;
  if (Hash01(kSaltColdItem, item) >= o_.cold_items) return 0;
  const double f =
      o_.cold_items_after + (1.0 - o_.cold_items_after) * Hash01(kSaltColdItemStart, item);
  return static_cast<int64_t>(std::floor(f * static_cast<double>(o_.events)));
}

int64_t SynthModel::TimestampAt(int64_t index) const {
  return o_.start_time + static_cast<int64_t>(FloorMulDiv(static_cast<uint64_t>(index),
                                                          static_cast<uint64_t>(o_.duration_s),
                                                          static_cast<uint64_t>(o_.events)));
}

void SynthModel::DrawSlots(uint64_t user, int k, const uint32_t* gens, uint32_t epoch,
                           const uint32_t* exclude, int n_exclude, uint32_t* out) const {
  const uint64_t user_key = Mix64(Mix64(o_.seed ^ kSaltInterests) ^ user);
  auto taken = [&](uint32_t c, int j) {
    for (int i = 0; i < j; ++i)
      if (out[i] == c) return true;
    for (int i = 0; i < n_exclude; ++i)
      if (exclude[i] == c) return true;
    return false;
  };
  for (int j = 0; j < k; ++j) {
    Rng rng(Mix64(user_key + static_cast<uint64_t>(j)) ^
            ((static_cast<uint64_t>(gens[j]) << 1) | epoch));
    uint32_t c = static_cast<uint32_t>(category_zipf_.Sample(rng));
    int tries = 0;
    while (taken(c, j) && ++tries < kMaxRejections)
      c = static_cast<uint32_t>(category_zipf_.Sample(rng));
    // Validation guarantees categories >= k + n_exclude, so a free category exists.
    while (taken(c, j)) c = static_cast<uint32_t>((c + 1) % o_.categories);
    out[j] = c;
  }
}

int64_t SynthModel::InterestsValidUntil(uint64_t user, int64_t index) const {
  int64_t until = o_.events;
  if (index < drift_index_ && DriftsAtPlantedPoint(user)) until = drift_index_;
  if (o_.drift_rate > 0) {
    const double n = static_cast<double>(o_.events);
    const double x = static_cast<double>(index) / n;
    for (int j = 0, k = NumInterests(user); j < k; ++j) {
      const double phase = Hash01(kSaltPhase, user, j);
      const double gen = std::floor(o_.drift_rate * x + phase);
      // Two events of margin absorb the rounding of x; stopping early only costs a recompute.
      const double change = std::floor((gen + 1 - phase) / o_.drift_rate * n) - 2;
      if (change < static_cast<double>(until)) until = static_cast<int64_t>(std::max(change, 0.0));
    }
  }
  return std::max(until, index + 1);
}

int SynthModel::Interests(uint64_t user, int64_t index, uint32_t* out, int count) const {
  const int k = NumInterests(user);
  if (count < 0 || count > k) count = k;
  uint32_t gens[kSynthMaxInterests] = {};
  if (o_.drift_rate > 0) {
    const double x = static_cast<double>(index) / static_cast<double>(o_.events);
    for (int j = 0; j < k; ++j)
      gens[j] = static_cast<uint32_t>(std::floor(o_.drift_rate * x + Hash01(kSaltPhase, user, j)));
  }
  if (index >= drift_index_ && DriftsAtPlantedPoint(user)) {
    uint32_t before[kSynthMaxInterests];
    DrawSlots(user, k, gens, 0, nullptr, 0, before);
    DrawSlots(user, count, gens, 1, before, k, out);
  } else {
    DrawSlots(user, count, gens, 0, nullptr, 0, out);
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// SynthGenerator

SynthGenerator::SynthGenerator(const SynthModel* model) : model_(model), o_(model->options()) {
  uint64_t size = 1;
  while (size < o_.users + 1 && size < kMaxCacheSize) size <<= 1;
  cache_.resize(size);
  cache_mask_ = size - 1;
}

void SynthGenerator::Seek(int64_t index) {
  index = std::clamp<int64_t>(index, 0, o_.events);
  index_ = index / kSynthChunk * kSynthChunk;
  Event skipped;
  while (index_ < index) Next(&skipped);
}

bool SynthGenerator::Next(Event* e, SynthEventTruth* truth) {
  if (index_ >= o_.events) return false;
  const int64_t i = index_;
  // One random stream per chunk: a chunk is reproducible without generating its predecessors.
  if (i % kSynthChunk == 0)
    rng_.Seed(Mix64(o_.seed ^ kSaltChunk) + static_cast<uint64_t>(i / kSynthChunk));

  const int domain = (o_.domain1_fraction > 0 && rng_.Uniform() < o_.domain1_fraction) ? 1 : 0;

  uint64_t user = model_->user_sampler().Sample(rng_) + 1;
  if (o_.cold_users > 0) {
    for (int tries = 1; model_->UserStartIndex(user) > i; ++tries) {
      if (tries < kMaxRejections) {
        user = model_->user_sampler().Sample(rng_) + 1;
      } else {
        user = user % o_.users + 1;  // probe; user 1 is never cold, so this ends
      }
    }
  }

  const bool noise = o_.noise > 0 && rng_.Uniform() < o_.noise;
  uint32_t c;
  int slot = -1;
  if (noise) {
    c = static_cast<uint32_t>(model_->category_sampler().Sample(rng_));
  } else {
    const int k = model_->NumInterests(user);
    const double v = rng_.Uniform();
    slot = 0;
    while (slot + 1 < k && v >= model_->SlotCdf(k, slot)) ++slot;
    CacheEntry& ce = cache_[user & cache_mask_];
    if (ce.user != user || ce.until <= i) {
      ce.user = user;
      model_->Interests(user, i, ce.cats);
      ce.until = model_->InterestsValidUntil(user, i);
    }
    c = ce.cats[slot];
  }

  const uint64_t first = model_->CategoryFirstItem(domain, c);
  const ZipfSampler& ranks = model_->RankSampler(model_->CategorySize(domain, c));
  uint64_t rank = ranks.Sample(rng_);
  if (o_.cold_items > 0) {
    for (int tries = 1; model_->ItemStartIndex(first + rank, rank) > i; ++tries)
      rank = tries < kMaxRejections ? ranks.Sample(rng_) : 0;  // rank 0 is never cold
  }

  const double scale = noise ? o_.noise_engagement : 1.0;
  const double a = rng_.Uniform();
  double acc = o_.click_prob * scale;
  Action action = Action::kView;
  if (a < acc) {
    action = Action::kClick;
  } else if (a < (acc += o_.cart_prob * scale)) {
    action = Action::kCart;
  } else if (a < (acc += o_.fav_prob * scale)) {
    action = Action::kFav;
  } else if (a < (acc += o_.buy_prob * scale)) {
    action = Action::kBuy;
  }

  e->user = user;
  e->item = first + rank;
  e->category = model_->CategoryId(domain, c);
  e->timestamp = model_->TimestampAt(i);
  e->action = action;
  e->domain = static_cast<uint8_t>(domain);
  if (truth != nullptr) {
    truth->index = i;
    truth->noise = noise;
    truth->slot = slot;
    truth->category_index = c;
    truth->item_rank = rank;
  }
  ++index_;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

// The event log sink: stdout, a plain file or a gzip file. Errors name the path.
class EventSink {
 public:
  ~EventSink() {
    if (gz_ != nullptr) gzclose(gz_);
    if (file_ != nullptr && file_ != stdout) std::fclose(file_);
  }
  Status Open(const std::string& path, int gzip_level) {
    path_ = path;
    if (path == "-") {
      file_ = stdout;
      return Status::Ok();
    }
    if (EndsWith(path, ".gz")) {
      const std::string mode = "wb" + std::to_string(std::clamp(gzip_level, 0, 9));
      gz_ = gzopen(path.c_str(), mode.c_str());
      if (gz_ == nullptr)
        return InternalError("cannot open '" + path + "' for writing: " + std::strerror(errno));
      gzbuffer(gz_, 1 << 18);
      return Status::Ok();
    }
    file_ = std::fopen(path.c_str(), "wb");
    if (file_ == nullptr)
      return InternalError("cannot open '" + path + "' for writing: " + std::strerror(errno));
    return Status::Ok();
  }
  Status Write(const std::string& data) {
    if (data.empty()) return Status::Ok();
    if (gz_ != nullptr) {
      if (gzwrite(gz_, data.data(), static_cast<unsigned>(data.size())) !=
          static_cast<int>(data.size())) {
        int err = 0;
        const char* msg = gzerror(gz_, &err);
        return InternalError("write to '" + path_ +
                             "' failed: " + (err == Z_ERRNO ? std::strerror(errno) : msg));
      }
      return Status::Ok();
    }
    if (std::fwrite(data.data(), 1, data.size(), file_) != data.size())
      return InternalError("write to '" + path_ + "' failed: " + std::strerror(errno));
    return Status::Ok();
  }
  Status Close() {
    if (gz_ != nullptr) {
      const int rc = gzclose(gz_);
      gz_ = nullptr;
      if (rc != Z_OK)
        return InternalError("closing '" + path_ + "' failed (zlib error " + std::to_string(rc) +
                             (rc == Z_ERRNO ? std::string(": ") + std::strerror(errno) : "") + ")");
      return Status::Ok();
    }
    if (file_ == nullptr) return Status::Ok();
    FILE* f = file_;
    file_ = nullptr;
    const bool ok = std::fflush(f) == 0 && !std::ferror(f);
    const int saved = errno;
    const bool closed = f == stdout ? true : std::fclose(f) == 0;
    if (!ok || !closed)
      return InternalError("write to '" + path_ + "' failed: " + std::strerror(ok ? errno : saved));
    return Status::Ok();
  }

 private:
  std::string path_;
  FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
};

std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string Str(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

template <typename T>
std::string List(const T* v, int n) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) {
    if (i) out += ", ";
    out += std::to_string(v[i]);
  }
  return out + "]";
}

}  // namespace

std::string SynthTruthJson(const SynthModel& model, const SynthStats& stats, int64_t sample_users) {
  const SynthOptions& o = model.options();
  std::ostringstream js;
  js << "{\n  \"generator\": \"ips data synth\",\n  \"version\": 1,\n";
  js << "  \"format\": \"user\\titem\\tcategory\\ttimestamp\\taction\\tdomain "
        "(worker/events.h)\",\n";
  js << "  \"options\": {\"events\": " << o.events << ", \"users\": " << o.users
     << ", \"items\": " << o.items << ", \"categories\": " << o.categories
     << ", \"domain1_items\": " << o.domain1_items << ", \"item_alpha\": " << Num(o.item_alpha)
     << ", \"category_alpha\": " << Num(o.category_alpha)
     << ", \"user_alpha\": " << Num(o.user_alpha) << ", \"min_interests\": " << o.min_interests
     << ", \"max_interests\": " << o.max_interests << ", \"noise\": " << Num(o.noise)
     << ", \"drift_at\": " << Num(o.drift_at) << ", \"drift_users\": " << Num(o.drift_users)
     << ", \"drift_rate\": " << Num(o.drift_rate)
     << ", \"domain1_fraction\": " << Num(o.domain1_fraction)
     << ", \"cold_users\": " << Num(o.cold_users)
     << ", \"cold_users_after\": " << Num(o.cold_users_after)
     << ", \"cold_items\": " << Num(o.cold_items)
     << ", \"cold_items_after\": " << Num(o.cold_items_after)
     << ", \"click_prob\": " << Num(o.click_prob) << ", \"cart_prob\": " << Num(o.cart_prob)
     << ", \"fav_prob\": " << Num(o.fav_prob) << ", \"buy_prob\": " << Num(o.buy_prob)
     << ", \"noise_engagement\": " << Num(o.noise_engagement)
     << ", \"start_time\": " << o.start_time << ", \"duration_s\": " << o.duration_s
     << ", \"seed\": " << o.seed << "},\n";

  js << "  \"model\": "
     << Str("See worker/synth.h. Category index c (0-based) has id c+1 in domain 0 and "
            "categories+c+1 in domain 1; domain d's category c owns item ids [first_d + "
            "floor(c*n_d/C), "
            "first_d + floor((c+1)*n_d/C)) with first_0=1, n_0=items, first_1=items+1, "
            "n_1=domain1_items, ranked by popularity in id order (P(rank r) ∝ (r+1)^-item_alpha). "
            "User ids are activity ranks (P ∝ u^-user_alpha). Interests are listed as category "
            "indices; slot j of k has weight ∝ 1/(j+1). Timestamp of event i = start_time + "
            "floor(i*duration_s/events). Exact per-user/per-item facts: SynthModel in "
            "worker/synth.h.")
     << ",\n";
  const int domains = o.domain1_fraction > 0 ? 2 : 1;
  js << "  \"domains\": [";
  for (int d = 0; d < domains; ++d) {
    const uint64_t n = d == 0 ? o.items : o.domain1_items;
    js << (d ? ", " : "") << "{\"domain\": " << d
       << ", \"first_item\": " << model.CategoryFirstItem(d, 0)
       << ", \"last_item\": " << model.CategoryFirstItem(d, 0) + n - 1
       << ", \"first_category\": " << model.CategoryId(d, 0)
       << ", \"last_category\": " << model.CategoryId(d, static_cast<uint32_t>(o.categories - 1))
       << "}";
  }
  js << "],\n";
  // Explicit ranges when they are small enough to be useful to read.
  if (o.categories <= 100000) {
    js << "  \"category_first_item\": [";
    for (int d = 0; d < domains; ++d) {
      js << (d ? ", " : "") << "[";
      for (uint64_t c = 0; c < o.categories; ++c)
        js << (c ? ", " : "") << model.CategoryFirstItem(d, static_cast<uint32_t>(c));
      js << "]";
    }
    js << "],\n";
  }
  js << "  \"category_popularity_top10\": [";
  for (uint64_t c = 0; c < std::min<uint64_t>(10, o.categories); ++c)
    js << (c ? ", " : "") << Num(model.category_sampler().Probability(c));
  js << "],\n";
  js << "  \"planted_drift\": "
     << (o.drift_at > 0
             ? "{\"index\": " + std::to_string(model.DriftIndex()) +
                   ", \"timestamp\": " + std::to_string(model.TimestampAt(model.DriftIndex())) + "}"
             : std::string("null"))
     << ",\n";

  // Cold-start counts: one hash per id, skipped for id spaces too large to scan quickly.
  constexpr uint64_t kScanMax = 100000000;
  if (o.cold_users > 0 && o.users <= kScanMax) {
    int64_t n = 0;
    for (uint64_t u = 1; u <= o.users; ++u) n += model.UserStartIndex(u) > 0;
    js << "  \"cold_user_count\": " << n << ",\n";
  }
  if (o.cold_items > 0 && o.items + o.domain1_items <= kScanMax) {
    int64_t n = 0;
    const uint64_t last = o.items + (domains == 2 ? o.domain1_items : 0);
    for (uint64_t it = 1; it <= last; ++it) n += model.ItemStartIndex(it) > 0;
    js << "  \"cold_item_count\": " << n << ",\n";
  }

  js << "  \"counts\": {\"events\": " << stats.events << ", \"domain0\": " << stats.domain_events[0]
     << ", \"domain1\": " << stats.domain_events[1] << ", \"noise\": " << stats.noise_events
     << ", \"actions\": {";
  for (int a = 0; a < 5; ++a)
    js << (a ? ", " : "") << "\"" << ActionName(static_cast<Action>(a))
       << "\": " << stats.action_events[a];
  js << "}, \"bytes\": " << stats.bytes << "},\n";

  auto user_entry = [&](uint64_t u) {
    uint32_t cats[kSynthMaxInterests];
    const int k = model.NumInterests(u);
    double w[kSynthMaxInterests];
    for (int j = 0; j < k; ++j) w[j] = model.SlotWeight(k, j);
    const int64_t start = model.UserStartIndex(u);
    std::ostringstream e;
    e << "{\"user\": " << u << ", \"k\": " << k << ", \"weights\": [";
    for (int j = 0; j < k; ++j) e << (j ? ", " : "") << Num(w[j]);
    e << "], \"start_index\": " << start << ", \"start_timestamp\": " << model.TimestampAt(start)
      << ", \"drifts\": " << (model.DriftsAtPlantedPoint(u) ? "true" : "false");
    model.Interests(u, start, cats);
    e << ", \"interests_at_start\": " << List(cats, k);
    if (o.drift_at > 0 && model.DriftIndex() > 0) {
      model.Interests(u, model.DriftIndex() - 1, cats);
      e << ", \"interests_before_drift\": " << List(cats, k);
      model.Interests(u, model.DriftIndex(), cats);
      e << ", \"interests_after_drift\": " << List(cats, k);
    }
    model.Interests(u, o.events - 1, cats);
    e << ", \"interests_at_end\": " << List(cats, k) << "}";
    return e.str();
  };
  js << "  \"sample_users\": [";
  const uint64_t n_sample =
      std::min<uint64_t>(static_cast<uint64_t>(std::max<int64_t>(sample_users, 0)), o.users);
  for (uint64_t u = 1; u <= n_sample; ++u) js << (u > 1 ? ",\n    " : "\n    ") << user_entry(u);
  js << "\n  ],\n";
  // Cold users are rare among the first ids: list the first ones separately.
  js << "  \"sample_cold_users\": [";
  int64_t listed = 0;
  if (o.cold_users > 0) {
    for (uint64_t u = 2; u <= o.users && listed < sample_users && u < 100000000; ++u) {
      if (model.UserStartIndex(u) == 0) continue;
      js << (listed ? ",\n    " : "\n    ") << user_entry(u);
      ++listed;
    }
  }
  js << "\n  ],\n";
  js << "  \"sample_cold_items\": [";
  listed = 0;
  if (o.cold_items > 0) {
    for (uint64_t it = 1; it <= o.items && listed < sample_users && it < 100000000; ++it) {
      const int64_t s = model.ItemStartIndex(it);
      if (s == 0) continue;
      js << (listed ? ", " : "") << "{\"item\": " << it << ", \"start_index\": " << s
         << ", \"start_timestamp\": " << model.TimestampAt(s) << "}";
      ++listed;
    }
  }
  js << "]\n}\n";
  return js.str();
}

Status WriteSynthEvents(const SynthOptions& o, const std::string& path,
                        const std::string& truth_path, int gzip_level, int64_t truth_sample_users,
                        const std::function<void(int64_t)>& progress, SynthStats* stats) {
  IPS_ASSIGN_OR_RETURN(std::unique_ptr<SynthModel> model, SynthModel::Create(o));
  Timer timer;  // the rate excludes building the samplers' tables
  EventSink sink;
  IPS_RETURN_IF_ERROR(sink.Open(path, gzip_level));
  SynthStats st;
  SynthGenerator gen(model.get());
  constexpr size_t kFlushBytes = 1 << 20;
  std::string buf;
  buf.reserve(kFlushBytes + 256);
  Event e;
  SynthEventTruth t;
  while (gen.Next(&e, &t)) {
    ++st.domain_events[e.domain];
    st.noise_events += t.noise;
    ++st.action_events[static_cast<int>(e.action)];
    AppendEventLine(e, &buf);
    if (buf.size() >= kFlushBytes) {
      st.bytes += static_cast<int64_t>(buf.size());
      IPS_RETURN_IF_ERROR(sink.Write(buf));
      buf.clear();
    }
    if (progress && gen.index() % kSynthChunk == 0) progress(gen.index());
  }
  st.bytes += static_cast<int64_t>(buf.size());
  IPS_RETURN_IF_ERROR(sink.Write(buf));
  IPS_RETURN_IF_ERROR(sink.Close());
  st.events = gen.index();
  if (progress) progress(st.events);
  st.seconds = timer.Seconds();
  if (!truth_path.empty()) {
    const std::string json = SynthTruthJson(*model, st, truth_sample_users);
    EventSink truth;
    IPS_RETURN_IF_ERROR(truth.Open(truth_path, 6));
    IPS_RETURN_IF_ERROR(truth.Write(json));
    IPS_RETURN_IF_ERROR(truth.Close());
  }
  if (stats != nullptr) *stats = st;
  return Status::Ok();
}

}  // namespace ips
