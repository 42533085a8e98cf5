#include "worker/dataset_builder.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <unordered_map>

#include "common/random.h"
#include "ps/checkpoint_io.h"
#include "worker/columnar_file.h"
#include "worker/line_reader.h"
#include "worker/manifest_magic.h"
#include "worker/negative_sampler.h"
#include "worker/record_parsers.h"
#include "worker/shard_schema.h"

namespace ips {
namespace {

namespace col = shard_columns;

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
std::string DirName(const std::string& p) {
  const size_t s = p.rfind('/');
  return s == std::string::npos ? "." : (s == 0 ? "/" : p.substr(0, s));
}
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `dir/name` or `dir/name.gz`, whichever exists (plain first).
StatusOr<std::string> FindBeside(const std::string& dir, const std::string& name, bool prefer_gz) {
  const std::string plain = dir + "/" + name, gz = plain + ".gz";
  if (prefer_gz && IsFile(gz)) return gz;
  if (IsFile(plain)) return plain;
  if (IsFile(gz)) return gz;
  return NotFoundError(plain + ": not found (nor " + gz + ")");
}

// The ratings files of a MovieLens-1M directory, as paths in sorted name order: every regular
// file named ratings*.dat or ratings*.dat.gz (the official ratings.dat, or pieces of it such as
// shared/data's ratings.users_0001-2999.dat.gz). They are all read, as one concatenated input:
// taking only one silently dropped the others. A piece present both plain and gzipped is one
// file: the plain one is read, as FindBeside does. Other names (ratings.dat.bak, ratings.csv) are
// not ratings pieces and are left alone.
StatusOr<std::vector<std::string>> MovieLens1mRatingsFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return NotFoundError(dir + ": cannot list: " + std::strerror(errno));
  std::set<std::string> names;
  while (const dirent* de = ::readdir(d)) {
    const std::string name = de->d_name;
    if (name.rfind("ratings", 0) == 0 && (EndsWith(name, ".dat") || EndsWith(name, ".dat.gz")) &&
        IsFile(dir + "/" + name))
      names.insert(name);
  }
  ::closedir(d);
  std::vector<std::string> paths;
  for (const std::string& name : names)
    if (!EndsWith(name, ".gz") || names.count(name.substr(0, name.size() - 3)) == 0)
      paths.push_back(dir + "/" + name);
  if (paths.empty())
    return NotFoundError(dir + ": no MovieLens-1M ratings file (ratings.dat, or ratings*.dat or " +
                         "ratings*.dat.gz pieces of it)");
  return paths;
}

Status MakeDirs(const std::string& dir) {
  std::string cur;
  size_t i = 0;
  while (i <= dir.size()) {
    const size_t j = dir.find('/', i);
    cur = dir.substr(0, j == std::string::npos ? dir.size() : j);
    if (!cur.empty() && !IsDir(cur) && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      return NotFoundError(cur + ": cannot create directory: " + std::strerror(errno));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return Status::Ok();
}

// Counts every line of an input: kept, bad (skipped under --max_bad_records) or filtered.
struct LineStats {
  uint64_t lines = 0;
  uint64_t kept = 0;
  uint64_t bad = 0;
  std::map<std::string, uint64_t> filtered;
};

uint64_t FilteredTotal(const LineStats& stats) {
  uint64_t filtered = 0;
  for (const auto& [reason, n] : stats.filtered) filtered += n;
  return filtered;
}

// "N lines: B bad, F filtered" of the lines counted since `before` (the start by default), for
// errors about an input that yielded nothing usable.
std::string LineSummary(const LineStats& stats, const LineStats& before = {}) {
  return std::to_string(stats.lines - before.lines) +
         " lines: " + std::to_string(stats.bad - before.bad) + " bad, " +
         std::to_string(FilteredTotal(stats) - FilteredTotal(before)) + " filtered";
}

// Reads `path` line by line; `parse(line, err)` returns false for a malformed line. Blank lines
// are counted as filtered ("blank_line"), never parsed.
template <typename ParseFn>
Status ReadLines(const std::string& path, const ConvertOptions& opt, LineStats* stats,
                 ParseFn parse) {
  IPS_ASSIGN_OR_RETURN(auto reader, LineReader::Open(path));
  std::string_view line;
  for (;;) {
    IPS_ASSIGN_OR_RETURN(bool more, reader->Next(&line));
    if (!more) break;
    ++stats->lines;
    if (opt.progress && (stats->lines & 0xffff) == 0) opt.progress(stats->lines);
    if (line.find_first_not_of(" \t") == std::string_view::npos) {
      ++stats->filtered["blank_line"];
      continue;
    }
    FieldError err;
    if (parse(line, &err)) {
      ++stats->kept;
      continue;
    }
    const std::string msg =
        FormatFieldError(path, reader->line_number(), err.field, err.expected, err.got);
    if (static_cast<int64_t>(stats->bad) >= opt.max_bad_records) {
      if (opt.max_bad_records == 0) return InvalidArgumentError(msg);
      return InvalidArgumentError(msg + " [more than --max_bad_records=" +
                                  std::to_string(opt.max_bad_records) + " bad records]");
    }
    ++stats->bad;
    if (stats->bad <= 5) std::cerr << "warning: skipping bad record: " << msg << "\n";
  }
  return Status::Ok();
}

// Loads an item -> category side table (u.item, movies.dat). Its lines are not events, so they
// are not part of the event accounting; a bad line there is always an error.
template <typename ParseFn>
Status ReadItemTable(const std::string& path, std::unordered_map<uint64_t, uint64_t>* out,
                     ParseFn parse) {
  IPS_ASSIGN_OR_RETURN(auto reader, LineReader::Open(path));
  std::string_view line;
  for (;;) {
    IPS_ASSIGN_OR_RETURN(bool more, reader->Next(&line));
    if (!more) break;
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    uint64_t item = 0, cat = 0;
    FieldError err;
    if (!parse(line, &item, &cat, &err))
      return InvalidArgumentError(
          FormatFieldError(path, reader->line_number(), err.field, err.expected, err.got));
    (*out)[item] = cat;
  }
  return Status::Ok();
}

// Ascending unique raw ids -> dense 1..n. Lookups go through a flat open-addressing table
// (std::unordered_map's node chasing was the converter's top cost on millions of events).
class DenseIds {
 public:
  // Deduplicates through the hash table first, so only the distinct ids are sorted.
  void Build(const std::vector<uint64_t>& raw) {
    size_t cap = 16;
    while (cap < raw.size() * 2) cap <<= 1;
    mask_ = cap - 1;
    keys_.assign(cap, 0);
    values_.assign(cap, 0);  // 0 = empty slot (dense ids start at 1)
    raw_.clear();
    for (uint64_t id : raw) {
      size_t h = Mix64(id) & mask_;
      while (values_[h] != 0 && keys_[h] != id) h = (h + 1) & mask_;
      if (values_[h] == 0) {
        keys_[h] = id;
        values_[h] = 1;  // placeholder until the ids are sorted
        raw_.push_back(id);
      }
    }
    std::sort(raw_.begin(), raw_.end());
    for (size_t i = 0; i < raw_.size(); ++i) {
      size_t h = Mix64(raw_[i]) & mask_;
      while (keys_[h] != raw_[i]) h = (h + 1) & mask_;
      values_[h] = static_cast<uint32_t>(i + 1);
    }
    // Shrink the table when there are few distinct ids (categories): lookups stay in cache.
    if (raw_.size() * 4 < cap / 4) Rehash();
  }
  // raw must be one of the ids given to Build (programmer error otherwise: returns 0).
  uint32_t Dense(uint64_t raw) const {
    size_t h = Mix64(raw) & mask_;
    while (values_[h] != 0) {
      if (keys_[h] == raw) return values_[h];
      h = (h + 1) & mask_;
    }
    return 0;
  }
  size_t size() const { return raw_.size(); }
  void Rehash() {
    size_t cap = 16;
    while (cap < raw_.size() * 2) cap <<= 1;
    mask_ = cap - 1;
    keys_.assign(cap, 0);
    values_.assign(cap, 0);
    for (size_t i = 0; i < raw_.size(); ++i) {
      size_t h = Mix64(raw_[i]) & mask_;
      while (values_[h] != 0) h = (h + 1) & mask_;
      keys_[h] = raw_[i];
      values_[h] = static_cast<uint32_t>(i + 1);
    }
  }
  // [0] = 0 (padding), [i] = raw id of dense i.
  std::vector<uint64_t> RawTable() const {
    std::vector<uint64_t> t(raw_.size() + 1, 0);
    std::copy(raw_.begin(), raw_.end(), t.begin() + 1);
    return t;
  }

 private:
  std::vector<uint64_t> raw_;
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> values_;
  size_t mask_ = 0;
};

// Everything before sharding, in global record order (records sorted by raw user id).
struct Built {
  std::vector<uint64_t> rec_user;
  std::vector<uint64_t> rec_off{0};
  std::vector<uint32_t> rec_train;
  std::vector<uint32_t> ev_item, ev_cat;
  std::vector<int64_t> ev_ts;
  std::vector<uint8_t> ev_action, ev_domain;
  // Rows in record order; *_begin[r] .. *_begin[r+1] are record r's rows.
  std::vector<uint64_t> train_begin{0}, eval_begin{0};
  std::vector<uint32_t> train_pos, eval_pos;
  std::vector<uint8_t> train_label, eval_label;
  std::vector<uint32_t> eval_cand;  // eval rows x C
  int64_t cands = 0;
  bool seen_sets = true;
  std::vector<uint64_t> item_raw, cat_raw, item_count;
  std::vector<uint32_t> item_cat;
  uint64_t users = 0;
};

uint64_t ShardOf(uint64_t user_raw, int shards) {
  return Mix64(user_raw ^ 0x5851f42d4c957f2dULL) % static_cast<uint64_t>(shards);
}

// Every negative (an evaluation candidate drawn here, a training negative drawn per epoch by
// the reader) must be an item the user never interacted with. A user who interacted with every
// item has none: the sampler would hand back one of its own items (even the held-out one), so
// its list ranks the positive against itself, and training labels its own items (even the
// row's positive) 0. The peer's and SASRec's reference samplers loop forever there. Refused
// rather than dropped from evaluation: excluding users would silently change the evaluated
// population (and the seeded sample of every other user), and the same users' training
// negatives would stay wrong. Only users with >= num_items events can be affected, so the check
// costs nothing on real catalogues.
Status CheckEveryUserHasANegative(const Built& b, const std::vector<uint32_t>& evaluated,
                                  uint32_t num_items, const ConvertOptions& opt,
                                  const std::string& path) {
  std::vector<uint32_t> stamp(num_items + 1, 0);
  uint64_t affected = 0, needing = 0;
  size_t first = b.rec_user.size(), e = 0;
  bool first_evaluated = false, first_trains = false;
  for (size_t r = 0; r < b.rec_user.size(); ++r) {
    const bool is_evaluated = e < evaluated.size() && evaluated[e] == r;
    if (is_evaluated) ++e;
    const bool trains = b.train_begin[r + 1] > b.train_begin[r];
    if (!is_evaluated && !trains) continue;  // nothing is ever drawn for this user
    ++needing;
    const uint64_t begin = b.rec_off[r], end = b.rec_off[r + 1];
    if (end - begin < num_items) continue;
    uint32_t distinct = 0;
    for (uint64_t k = begin; k < end; ++k) {
      uint32_t& s = stamp[b.ev_item[k]];
      if (s != static_cast<uint32_t>(r + 1)) {
        s = static_cast<uint32_t>(r + 1);
        ++distinct;
      }
    }
    if (distinct < num_items) continue;
    if (affected++ == 0) {
      first = r;
      first_evaluated = is_evaluated;
      first_trains = trains;
    }
  }
  if (affected == 0) return Status::Ok();
  std::string needs;
  if (first_evaluated)
    needs = "the --eval_negatives=" + std::to_string(opt.eval_negatives) +
            " candidates of its evaluation list";
  if (first_trains)
    needs +=
        std::string(needs.empty() ? "" : " and ") + "the per-epoch negatives of its training rows";
  return InvalidArgumentError(
      path + ": user " + std::to_string(b.rec_user[first]) + " interacted with every one of the " +
      std::to_string(num_items) + " items (" +
      std::to_string(b.rec_off[first + 1] - b.rec_off[first]) +
      " events), so no negative can be drawn for it: " + needs +
      " must be items it never interacted with (" + std::to_string(affected) + " of the " +
      std::to_string(needing) +
      " users with training rows or an evaluation list interacted with every item); convert a "
      "catalogue with items these users never interacted with, or remove their events");
}

// Event formats: group by user, split, build rows. `path` (the events file) names the input in
// errors.
Status BuildFromEvents(std::vector<Event> events, const ConvertOptions& opt,
                       const std::string& protocol, const std::string& path, LineStats* stats,
                       Built* b) {
  // Dense ids first, in input order (independent lookups), so that an item's category is the
  // one of its first event in input order and the sort below carries everything it needs.
  DenseIds items, cats;
  {
    std::vector<uint64_t> raw(events.size());
    for (size_t i = 0; i < events.size(); ++i) raw[i] = events[i].item;
    items.Build(raw);
    for (size_t i = 0; i < events.size(); ++i) raw[i] = events[i].category;
    cats.Build(raw);
  }
  if (items.size() >= 0xffffffffULL || cats.size() >= 0xffffffffULL)
    return InvalidArgumentError(opt.input + ": more than 2^32-1 distinct items or categories");
  // Sort by (user, timestamp), ties in input order (the peer's stable lexsort). The keys carry
  // the whole event, so everything after the sort reads them sequentially.
  struct Key {
    uint64_t user;
    int64_t ts;
    uint32_t idx;
    uint32_t item;
    uint32_t cat;
    uint8_t action;
    uint8_t domain;
    bool operator<(const Key& o) const {
      if (user != o.user) return user < o.user;
      if (ts != o.ts) return ts < o.ts;
      return idx < o.idx;
    }
  };
  std::vector<uint32_t> first_cat(items.size() + 1, 0);
  std::vector<Key> keys(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    Key& k = keys[i];
    k = {e.user,
         e.timestamp,
         static_cast<uint32_t>(i),
         items.Dense(e.item),
         cats.Dense(e.category),
         static_cast<uint8_t>(e.action),
         e.domain};
    if (first_cat[k.item] == 0) first_cat[k.item] = k.cat;
  }
  std::vector<Event>().swap(events);
  std::sort(keys.begin(), keys.end());
  // Users below --min_user_events are dropped (every one of their lines counted as filtered).
  size_t out = 0, most_events = 0;
  for (size_t i = 0; i < keys.size();) {
    size_t j = i;
    while (j < keys.size() && keys[j].user == keys[i].user) ++j;
    most_events = std::max(most_events, j - i);
    if (static_cast<int64_t>(j - i) < opt.min_user_events) {
      stats->filtered["user_below_min_events"] += j - i;
      stats->kept -= j - i;
    } else {
      if (out != i) std::copy(keys.begin() + i, keys.begin() + j, keys.begin() + out);
      out += j - i;
    }
    i = j;
  }
  // An empty dataset has no items to sample negatives from: the readers refuse to open it.
  if (out == 0)
    return InvalidArgumentError(path + ": no user has >= " + std::to_string(opt.min_user_events) +
                                " events (the most any user has is " + std::to_string(most_events) +
                                "); lower --min_user_events");
  const bool dropped = out != keys.size();
  keys.resize(out);
  // Item/category vocabularies over the kept events only (compacted if users were dropped; the
  // ascending raw-id order is kept).
  std::vector<uint64_t> item_raw = items.RawTable(), cat_raw = cats.RawTable();
  if (dropped) {
    std::vector<uint32_t> item_map(item_raw.size(), 0), cat_map(cat_raw.size(), 0);
    for (const Key& k : keys) item_map[k.item] = cat_map[k.cat] = 1;
    const auto compact = [](std::vector<uint32_t>& map, std::vector<uint64_t>& raw) {
      uint32_t next = 0;
      std::vector<uint64_t> kept_raw{0};
      for (size_t i = 1; i < map.size(); ++i)
        if (map[i]) {
          map[i] = ++next;
          kept_raw.push_back(raw[i]);
        }
      raw = std::move(kept_raw);
    };
    compact(item_map, item_raw);
    compact(cat_map, cat_raw);
    std::vector<uint32_t> kept_first(item_raw.size(), 0);
    for (Key& k : keys) {
      const uint32_t old_item = k.item;
      k.item = item_map[old_item];
      k.cat = cat_map[k.cat];
      kept_first[k.item] = cat_map[first_cat[old_item]];
    }
    first_cat = std::move(kept_first);
  }
  b->item_raw = std::move(item_raw);
  b->cat_raw = std::move(cat_raw);
  b->item_cat = std::move(first_cat);
  b->item_count.assign(b->item_raw.size(), 0);
  const size_t n = keys.size();
  b->ev_item.resize(n);
  b->ev_cat.resize(n);
  b->ev_ts.resize(n);
  b->ev_action.resize(n);
  b->ev_domain.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Key& k = keys[i];
    b->ev_item[i] = k.item;
    b->ev_cat[i] = k.cat;
    b->ev_ts[i] = k.ts;
    b->ev_action[i] = k.action;
    b->ev_domain[i] = k.domain;
  }
  // Records = users; leave-one-out split; training rows.
  const int64_t L = opt.max_history;
  const bool last_l_only = protocol == "seqrec";
  for (size_t i = 0; i < n;) {
    size_t j = i;
    const uint64_t user = keys[i].user;
    while (j < n && keys[j].user == user) ++j;
    const uint32_t len = static_cast<uint32_t>(j - i);
    const uint32_t train_len = len >= 3 ? len - 2 : len;
    b->rec_user.push_back(user);
    b->rec_off.push_back(j);
    b->rec_train.push_back(train_len);
    for (uint32_t t = 0; t < train_len; ++t) ++b->item_count[b->ev_item[i + t]];
    uint32_t first = 1;
    if (last_l_only && train_len > L) first = std::max<uint32_t>(1, train_len - L);
    for (uint32_t t = first; t < train_len; ++t) {
      b->train_pos.push_back(t);
      b->train_label.push_back(1);
    }
    b->train_begin.push_back(b->train_pos.size());
    i = j;
  }
  b->users = b->rec_user.size();
  // A training row is a position t >= 1 of a train sequence: without one, `ips train` would
  // only fail later ("dataset has no training rows"). Refuse before anything is written.
  if (b->train_pos.empty()) {
    uint32_t most_train = 0;
    for (uint32_t t : b->rec_train) most_train = std::max(most_train, t);
    std::string remedy = "a user with 2 events, or with >= 4";
    if (opt.min_user_events > 2 && stats->filtered.count("user_below_min_events"))
      remedy += " (--min_user_events " + std::to_string(opt.min_user_events) +
                " dropped the users with fewer)";
    return InvalidArgumentError(
        path + ": no training rows: no user has >= 2 training events (the most any user keeps is " +
        std::to_string(most_train) +
        "; the leave-one-out split holds out the last 2 events of users with >= 3, and a "
        "training row needs an event before it): the input needs " +
        remedy);
  }
  // Evaluation users: all with >= 3 events, or a seeded random eval_users of them.
  std::vector<uint32_t> eligible;
  uint64_t most_kept = 0;
  for (size_t r = 0; r < b->rec_user.size(); ++r) {
    most_kept = std::max<uint64_t>(most_kept, b->rec_off[r + 1] - b->rec_off[r]);
    if (b->rec_off[r + 1] - b->rec_off[r] >= 3) eligible.push_back(static_cast<uint32_t>(r));
  }
  // No evaluation list would make every ranking metric 0/0 = NaN after training.
  if (eligible.empty())
    return InvalidArgumentError(path + ": no user has >= 3 events (the most any user has is " +
                                std::to_string(most_kept) +
                                "): the leave-one-out split leaves nothing to evaluate");
  if (static_cast<int64_t>(eligible.size()) > opt.eval_users) {
    Rng rng(opt.seed + 12345);
    for (int64_t k = 0; k < opt.eval_users; ++k) {
      const uint64_t pick = k + rng.UniformInt(eligible.size() - k);
      std::swap(eligible[k], eligible[pick]);
    }
    eligible.resize(opt.eval_users);
    std::sort(eligible.begin(), eligible.end());
  }
  const uint32_t num_items = static_cast<uint32_t>(b->item_raw.size() - 1);
  IPS_RETURN_IF_ERROR(CheckEveryUserHasANegative(*b, eligible, num_items, opt, path));
  const NegativeSampler sampler = protocol == "ctr"
                                      ? NegativeSampler::Popularity(b->item_count.data(), num_items)
                                      : NegativeSampler::Uniform(num_items);
  b->cands = 1 + opt.eval_negatives;
  std::vector<uint32_t> seen;
  size_t e = 0;
  for (size_t r = 0; r < b->rec_user.size(); ++r) {
    if (e < eligible.size() && eligible[e] == r) {
      ++e;
      const uint64_t begin = b->rec_off[r], end = b->rec_off[r + 1];
      seen.assign(b->ev_item.begin() + begin, b->ev_item.begin() + end);
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      b->eval_pos.push_back(static_cast<uint32_t>(end - begin - 1));
      b->eval_label.push_back(1);
      b->eval_cand.push_back(b->ev_item[end - 1]);
      // Per-user stream: candidates do not depend on sharding or on other users.
      Rng rng(Mix64(opt.seed ^ 0x65766131ULL) ^ Mix64(b->rec_user[r]));
      for (int64_t k = 0; k < opt.eval_negatives; ++k)
        b->eval_cand.push_back(sampler.Sample(rng, seen.data(), seen.size()));
    }
    b->eval_begin.push_back(b->eval_pos.size());
  }
  return Status::Ok();
}

// DIEN rows: each line is its own record = history + target.
struct DienRows {
  std::vector<DienRecord> rows;  // kept in memory: DIEN's files are ~a few million short rows
  size_t num_train = 0;
};

Status BuildFromDien(const DienRows& d, const ConvertOptions& opt, Built* b) {
  std::vector<uint64_t> raw_items, raw_cats, raw_users;
  for (const DienRecord& r : d.rows) {
    raw_items.push_back(r.item);
    raw_cats.push_back(r.category);
    raw_items.insert(raw_items.end(), r.hist_items.begin(), r.hist_items.end());
    raw_cats.insert(raw_cats.end(), r.hist_cats.begin(), r.hist_cats.end());
    raw_users.push_back(r.user);
  }
  DenseIds items, cats;
  items.Build(raw_items);
  cats.Build(raw_cats);
  std::sort(raw_users.begin(), raw_users.end());
  b->users = std::unique(raw_users.begin(), raw_users.end()) - raw_users.begin();
  b->item_raw = items.RawTable();
  b->cat_raw = cats.RawTable();
  b->item_cat.assign(items.size() + 1, 0);
  b->item_count.assign(items.size() + 1, 0);
  b->seen_sets = false;
  b->cands = 0;
  // Records in (user, input order) so that a user's rows sit together in one shard.
  std::vector<uint32_t> order(d.rows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t x, uint32_t y) { return d.rows[x].user < d.rows[y].user; });
  for (uint32_t idx : order) {
    const DienRecord& r = d.rows[idx];
    const bool train = idx < d.num_train;
    const size_t h = r.hist_items.size();
    for (size_t k = 0; k <= h; ++k) {
      const uint32_t it = items.Dense(k < h ? r.hist_items[k] : r.item);
      const uint32_t ct = cats.Dense(k < h ? r.hist_cats[k] : r.category);
      b->ev_item.push_back(it);
      b->ev_cat.push_back(ct);
      b->ev_ts.push_back(static_cast<int64_t>(k));  // DIEN has no times: position in history
      b->ev_action.push_back(static_cast<uint8_t>(Action::kView));
      b->ev_domain.push_back(0);
      if (b->item_cat[it] == 0) b->item_cat[it] = ct;
      if (train) ++b->item_count[it];
    }
    b->rec_user.push_back(r.user);
    b->rec_off.push_back(b->ev_item.size());
    b->rec_train.push_back(train ? static_cast<uint32_t>(h + 1) : 0);
    auto& pos = train ? b->train_pos : b->eval_pos;
    auto& label = train ? b->train_label : b->eval_label;
    pos.push_back(static_cast<uint32_t>(h));
    label.push_back(static_cast<uint8_t>(r.label));
    b->train_begin.push_back(b->train_pos.size());
    b->eval_begin.push_back(b->eval_pos.size());
  }
  return Status::Ok();
}

// Writes shard `s` of `b`: the records whose user hashes to s, with local offsets.
StatusOr<ManifestFile> WriteShard(const Built& b, int s, int num_shards, const std::string& dir) {
  std::vector<uint64_t> rec_user, rec_off{0}, seen_off{0};
  std::vector<uint32_t> rec_train, seen_item, ev_item, ev_cat, train_rec, train_pos, eval_rec,
      eval_pos, eval_cand;
  std::vector<int64_t> ev_ts;
  std::vector<uint8_t> ev_action, ev_domain, train_label, eval_label;
  std::vector<uint32_t> seen;
  const size_t C = static_cast<size_t>(b.cands);
  for (size_t r = 0; r < b.rec_user.size(); ++r) {
    if (ShardOf(b.rec_user[r], num_shards) != static_cast<uint64_t>(s)) continue;
    const uint32_t local = static_cast<uint32_t>(rec_user.size());
    const uint64_t begin = b.rec_off[r], end = b.rec_off[r + 1];
    rec_user.push_back(b.rec_user[r]);
    rec_train.push_back(b.rec_train[r]);
    ev_item.insert(ev_item.end(), b.ev_item.begin() + begin, b.ev_item.begin() + end);
    ev_cat.insert(ev_cat.end(), b.ev_cat.begin() + begin, b.ev_cat.begin() + end);
    ev_ts.insert(ev_ts.end(), b.ev_ts.begin() + begin, b.ev_ts.begin() + end);
    ev_action.insert(ev_action.end(), b.ev_action.begin() + begin, b.ev_action.begin() + end);
    ev_domain.insert(ev_domain.end(), b.ev_domain.begin() + begin, b.ev_domain.begin() + end);
    rec_off.push_back(ev_item.size());
    if (b.seen_sets) {
      seen.assign(b.ev_item.begin() + begin, b.ev_item.begin() + end);
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      seen_item.insert(seen_item.end(), seen.begin(), seen.end());
    }
    seen_off.push_back(seen_item.size());
    for (uint64_t k = b.train_begin[r]; k < b.train_begin[r + 1]; ++k) {
      train_rec.push_back(local);
      train_pos.push_back(b.train_pos[k]);
      train_label.push_back(b.train_label[k]);
    }
    for (uint64_t k = b.eval_begin[r]; k < b.eval_begin[r + 1]; ++k) {
      eval_rec.push_back(local);
      eval_pos.push_back(b.eval_pos[k]);
      eval_label.push_back(b.eval_label[k]);
      eval_cand.insert(eval_cand.end(), b.eval_cand.begin() + k * C,
                       b.eval_cand.begin() + (k + 1) * C);
    }
  }
  ColumnarWriter w(kKindShard);
  w.Add(shard_columns::kRecUser, rec_user);
  w.Add(shard_columns::kRecOffset, rec_off);
  w.Add(shard_columns::kRecTrainLen, rec_train);
  w.Add(shard_columns::kRecSeenOffset, seen_off);
  w.Add(shard_columns::kSeenItem, seen_item);
  w.Add(shard_columns::kEvItem, ev_item);
  w.Add(shard_columns::kEvCat, ev_cat);
  w.Add(shard_columns::kEvTs, ev_ts);
  w.Add(shard_columns::kEvAction, ev_action);
  w.Add(shard_columns::kEvDomain, ev_domain);
  w.Add(shard_columns::kTrainRec, train_rec);
  w.Add(shard_columns::kTrainPos, train_pos);
  w.Add(shard_columns::kTrainLabel, train_label);
  w.Add(shard_columns::kEvalRec, eval_rec);
  w.Add(shard_columns::kEvalPos, eval_pos);
  w.Add(shard_columns::kEvalLabel, eval_label);
  w.Add(shard_columns::kEvalCand, eval_cand);
  ManifestFile f;
  f.file = ShardFileName(s, num_shards);
  IPS_ASSIGN_OR_RETURN(auto written, w.Write(dir + "/" + f.file));
  f.bytes = written.bytes;
  f.crc = written.crc;
  std::vector<uint64_t> users(rec_user);
  std::sort(users.begin(), users.end());
  f.users = std::unique(users.begin(), users.end()) - users.begin();
  f.events = ev_item.size();
  f.train_examples = train_rec.size();
  f.eval_examples = eval_rec.size();
  return f;
}

// True for exactly the names ShardFileName writes: "shard-" 5 digits "-of-" 5 digits ".ips".
bool IsShardFileName(const std::string& name) {
  static const char kPattern[] = "shard-#####-of-#####.ips";
  if (name.size() != sizeof(kPattern) - 1) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const bool digit = name[i] >= '0' && name[i] <= '9';
    if (kPattern[i] == '#' ? !digit : name[i] != kPattern[i]) return false;
  }
  return true;
}

// Each file is replaced atomically (tmp + rename) and MANIFEST last, so converting into an
// existing directory leaves the previous conversion's shards that the new manifest does not
// list (e.g. a different --shards). Once the new manifest is in place they are garbage: remove
// them, but only files named exactly like our shards. A failure only leaves clutter behind (the
// dataset is complete), so it is a warning.
void RemoveStaleShards(const std::string& dir, const Manifest& m) {
  std::set<std::string> listed;
  for (const ManifestFile& f : m.shards) listed.insert(f.file);
  auto names = ps::ListDir(dir);
  if (!names.ok()) return;  // nothing to clean where nothing can be listed
  for (const std::string& name : *names) {
    if (!IsShardFileName(name) || listed.count(name) != 0) continue;
    const std::string path = dir + "/" + name;
    if (::unlink(path.c_str()) != 0)
      std::cerr << "warning: " << path << ": cannot remove stale shard: " << std::strerror(errno)
                << "\n";
  }
}

// The names a conversion writes into its output directory (and their ".tmp" staging copies), the
// only entries a directory without a MANIFEST may hold for ConvertDataset to write into it: what
// a conversion that failed before its MANIFEST leaves behind.
bool IsOurDatasetFileName(const std::string& name) {
  const std::string base = EndsWith(name, ".tmp") ? name.substr(0, name.size() - 4) : name;
  return base == kVocabFile || base == kManifestFile || IsShardFileName(base);
}

}  // namespace

const std::vector<std::string>& ConvertFormats() {
  static const std::vector<std::string> kFormats = {"movielens100k", "movielens1m", "seqrec",
                                                    "taobao",        "dien",        "events"};
  return kFormats;
}

std::string DefaultProtocol(const std::string& format) {
  if (format == "dien") return "given";
  if (format == "taobao" || format == "events") return "ctr";
  return "seqrec";
}

std::string ShardFileName(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "shard-%05d-of-%05d.ips", index, count);
  return buf;
}

Status CheckConvertOutput(const std::string& output) {
  // A conversion replaces MANIFEST, vocab.ips and shard-NNNNN-of-NNNNN.ips in --output and removes
  // stale shard files there. A mistyped --output (a checkpoint's ckpt-<step>, a bundle's v-<n>,
  // an input directory) would lose that directory's MANIFEST, or make a checkpoint or bundle root
  // look like a version directory: only a new or empty directory, one holding a previous
  // conversion, or the leftovers of a failed one are written into.
  const std::string remedy =
      ": refusing to write a dataset there (a conversion writes MANIFEST, vocab.ips and "
      "shard-NNNNN-of-NNNNN.ips into --output); choose a new or empty directory, or the "
      "directory of an earlier conversion";
  // Before anything else: a new directory under /proc or /sys passes the checks below (its parent
  // is a directory) and the conversion failed only after parsing the whole input, and one on a
  // cgroup or configfs mount is a kernel object the conversion would create.
  IPS_RETURN_IF_ERROR(ps::CheckNotOnPseudoFileSystem(output, "--output", "dataset files"));
  struct stat st;
  if (::stat(output.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR)
      return FailedPreconditionError("--output " + output +
                                     ": cannot check it: " + std::strerror(errno));
    // It will be created: the nearest existing ancestor must be a directory (a file there would
    // only fail once the whole input has been parsed). None: in the working directory.
    const std::string p = ps::NearestExistingAncestor(output);
    if (p.empty() || ps::IsDirectory(p)) return Status::Ok();
    return FailedPreconditionError("--output " + output + ": " + p +
                                   " exists and is not a directory, so " + output +
                                   " cannot be created");
  }
  // What it is: worker/manifest_magic.h InspectDirectory, which `ips export --output` and
  // `--stream_publish_dir` use too, so that all of them name a directory the same way.
  auto inspected = InspectDirectory(output);
  if (!inspected.ok()) return inspected.status().WithContext("--output");
  const DirectoryContents& c = *inspected;
  switch (c.kind) {
    case DirectoryContents::kMissing:  // removed since the stat above: created as it would be
    case DirectoryContents::kDataset:  // an earlier conversion
      return Status::Ok();
    case DirectoryContents::kNotDirectory:
      return FailedPreconditionError("--output " + output +
                                     ": exists and is not a directory (a converted dataset is a "
                                     "directory)" +
                                     remedy);
    case DirectoryContents::kCheckpoint:
    case DirectoryContents::kBundleVersion:
      return FailedPreconditionError("--output " + output + ": " + c.DescribeManifest() + remedy);
    case DirectoryContents::kOtherManifest:
      return FailedPreconditionError("--output " + output + ": is not a converted dataset (" +
                                     c.manifest + " is not a dataset manifest)" + remedy);
    case DirectoryContents::kNoManifest:
      break;
  }
  // No MANIFEST: empty, or what a conversion that failed before writing it left. Hidden files
  // (.gitkeep, .DS_Store, .nfs*) are never touched, so they do not count (c.names leaves them out).
  std::vector<std::string> foreign;
  for (const std::string& name : c.names)
    if (!IsOurDatasetFileName(name)) foreign.push_back(name);
  if (foreign.empty()) return Status::Ok();
  const std::string looks = !c.root.empty()
                                ? c.root
                                : "a non-empty directory without a dataset MANIFEST (it holds " +
                                      QuoteNames(foreign) + ")";
  return FailedPreconditionError("--output " + output + ": is " + looks + remedy);
}

Status ValidateConvertOptions(const ConvertOptions& opt) {
  const auto& formats = ConvertFormats();
  if (std::find(formats.begin(), formats.end(), opt.format) == formats.end())
    return InvalidArgumentError("unknown --format '" + opt.format + "'");
  const std::string protocol = opt.protocol.empty() ? DefaultProtocol(opt.format) : opt.protocol;
  if (opt.format == "dien" ? protocol != "given" : (protocol != "seqrec" && protocol != "ctr"))
    return InvalidArgumentError("--protocol '" + protocol + "' is not valid for --format " +
                                opt.format + " (" +
                                (opt.format == "dien" ? "dien: given" : "seqrec or ctr") + ")");
  if (opt.shards < 1 || opt.shards > 65536)
    return InvalidArgumentError("--shards must be in 1..65536 (got " + std::to_string(opt.shards) +
                                ")");
  if (opt.max_history < 1 || opt.max_history > 100000)
    return InvalidArgumentError("--max_history must be in 1..100000");
  if (protocol == "given") {
    // DIEN's files carry their own evaluation rows: neither flag is used (only kept in range).
    if (opt.eval_negatives < 0 || opt.eval_negatives > 100000)
      return InvalidArgumentError("--eval_negatives must be in 0..100000 (got " +
                                  std::to_string(opt.eval_negatives) + ")");
    if (opt.eval_users < 0)
      return InvalidArgumentError("--eval_users must be >= 0 (got " +
                                  std::to_string(opt.eval_users) + ")");
  } else {
    // Evaluation ranks the held-out item among sampled negatives, over a sample of users: with
    // no negative or no user there is nothing to rank and every metric is NaN.
    if (opt.eval_negatives < 1 || opt.eval_negatives > 100000)
      return InvalidArgumentError("--eval_negatives must be in 1..100000 for --protocol " +
                                  protocol + " (got " + std::to_string(opt.eval_negatives) +
                                  "): each evaluation list ranks the held-out item against at "
                                  "least one negative");
    if (opt.eval_users < 1)
      return InvalidArgumentError("--eval_users must be >= 1 for --protocol " + protocol +
                                  " (got " + std::to_string(opt.eval_users) +
                                  "): training evaluates on these users' held-out items; a value "
                                  "above the number of eligible users evaluates all of them");
  }
  if (opt.min_user_events < 0)
    return InvalidArgumentError("--min_user_events must be >= 0 (got " +
                                std::to_string(opt.min_user_events) + ")");
  if (opt.max_bad_records < 0) return InvalidArgumentError("--max_bad_records must be >= 0");
  if (!opt.eval_input.empty() && opt.format != "dien")
    return InvalidArgumentError("--eval_input is only used by --format dien");
  if (opt.output.empty()) return InvalidArgumentError("--output is required");
  return Status::Ok();
}

namespace {

// ConvertDataset after the checks of the options and --output; *stats counts the lines read
// even when it fails.
StatusOr<Manifest> Convert(const ConvertOptions& opt, LineStats* stats_out) {
  const std::string protocol = opt.protocol.empty() ? DefaultProtocol(opt.format) : opt.protocol;
  LineStats& stats = *stats_out;
  Built b;
  if (opt.format == "dien") {
    DienRows d;
    DienRecord rec;
    IPS_RETURN_IF_ERROR(ReadLines(opt.input, opt, &stats, [&](std::string_view l, FieldError* e) {
      if (!ParseDienLine(l, &rec, e)) return false;
      d.rows.push_back(rec);
      return true;
    }));
    d.num_train = d.rows.size();
    // No training rows (or an --eval_input without rows) would train on nothing (evaluate to
    // NaN): refuse, naming the file.
    if (d.num_train == 0)
      return InvalidArgumentError(opt.input + ": no usable examples (" + LineSummary(stats) + ")");
    if (!opt.eval_input.empty()) {
      // One LineStats for both files: --max_bad_records bounds their total.
      const LineStats before = stats;
      IPS_RETURN_IF_ERROR(
          ReadLines(opt.eval_input, opt, &stats, [&](std::string_view l, FieldError* e) {
            if (!ParseDienLine(l, &rec, e)) return false;
            d.rows.push_back(rec);
            return true;
          }));
      if (d.rows.size() == d.num_train)
        return InvalidArgumentError(opt.eval_input + ": no usable examples (" +
                                    LineSummary(stats, before) + ")");
    }
    if (d.rows.size() >= 0xffffffffULL) return InvalidArgumentError("too many DIEN rows");
    IPS_RETURN_IF_ERROR(BuildFromDien(d, opt, &b));
  } else {
    std::vector<Event> events;
    std::unordered_map<uint64_t, uint64_t> item_cat;
    std::string data_path = opt.input;
    Event ev;
    // MovieLens: every rated item must be in the item table (its category comes from there); a
    // missing one means mismatched files, so it is a bad line rather than a guessed category.
    std::string missing_item;  // the `got` of that error (viewed until ReadLines formats it)
    const auto set_category = [&](const char* expected, FieldError* e) {
      const auto it = item_cat.find(ev.item);
      if (it == item_cat.end()) {
        missing_item = std::to_string(ev.item);
        e->field = "item";
        e->expected = expected;
        e->got = missing_item;
        return false;
      }
      ev.category = it->second;
      return true;
    };
    if (opt.format == "movielens100k") {
      if (IsDir(opt.input)) {
        IPS_ASSIGN_OR_RETURN(data_path, FindBeside(opt.input, "u.data", false));
      }
      IPS_ASSIGN_OR_RETURN(std::string item_path,
                           FindBeside(DirName(data_path), "u.item", EndsWith(data_path, ".gz")));
      IPS_RETURN_IF_ERROR(ReadItemTable(item_path, &item_cat, ParseMovieLens100kItem));
      IPS_RETURN_IF_ERROR(ReadLines(data_path, opt, &stats, [&](std::string_view l, FieldError* e) {
        if (!ParseMovieLens100kRating(l, &ev, e)) return false;
        if (!set_category("a movie id listed in u.item", e)) return false;
        events.push_back(ev);
        return true;
      }));
    } else if (opt.format == "movielens1m") {
      std::vector<std::string> ratings = {opt.input};
      if (IsDir(opt.input)) {
        IPS_ASSIGN_OR_RETURN(ratings, MovieLens1mRatingsFiles(opt.input));
        // Errors about the events as a whole name the directory and every file read.
        if (ratings.size() > 1) {
          data_path = opt.input + " (";
          for (size_t i = 0; i < ratings.size(); ++i)
            data_path += (i ? " + " : "") + ratings[i].substr(opt.input.size() + 1);
          data_path += ")";
        } else {
          data_path = ratings[0];
        }
      }
      IPS_ASSIGN_OR_RETURN(std::string movies_path, FindBeside(DirName(ratings[0]), "movies.dat",
                                                               EndsWith(ratings[0], ".gz")));
      IPS_RETURN_IF_ERROR(ReadItemTable(movies_path, &item_cat, ParseMovieLens1mMovie));
      // Several files are one input, read in sorted name order as if concatenated. A (user,
      // movie) pair already rated in an earlier file is a bad line: ML-1M has one rating per
      // pair, so the files overlap (one is a copy or a superset of another, e.g. the complete
      // ratings.dat beside a partial piece) and reading both would duplicate those users'
      // events. A pair repeated within one file is read as it always was.
      struct PairHash {
        size_t operator()(const std::pair<uint64_t, uint64_t>& p) const {
          return Mix64(p.first ^ Mix64(p.second));
        }
      };
      std::unordered_map<std::pair<uint64_t, uint64_t>, uint32_t, PairHash> earlier;
      std::string overlap_expected;  // the `expected` of that error (viewed until formatted)
      size_t indexed = 0;            // events[0, indexed) are in `earlier`
      for (size_t f = 0; f < ratings.size(); ++f) {
        IPS_RETURN_IF_ERROR(
            ReadLines(ratings[f], opt, &stats, [&](std::string_view l, FieldError* e) {
              if (!ParseMovieLens1mRating(l, &ev, e)) return false;
              if (!set_category("a movie id listed in movies.dat", e)) return false;
              if (!earlier.empty()) {
                const auto it = earlier.find({ev.user, ev.item});
                if (it != earlier.end()) {
                  overlap_expected = "a movie user " + std::to_string(ev.user) +
                                     " did not rate in " + ratings[it->second] +
                                     " (the ratings files overlap)";
                  missing_item = std::to_string(ev.item);
                  e->field = "item";
                  e->expected = overlap_expected.c_str();
                  e->got = missing_item;
                  return false;
                }
              }
              events.push_back(ev);
              return true;
            }));
        if (f + 1 < ratings.size()) {
          for (size_t i = indexed; i < events.size(); ++i)
            earlier.emplace(std::make_pair(events[i].user, events[i].item),
                            static_cast<uint32_t>(f));
          indexed = events.size();
        }
      }
    } else if (opt.format == "seqrec") {
      IPS_RETURN_IF_ERROR(ReadLines(data_path, opt, &stats, [&](std::string_view l, FieldError* e) {
        if (!ParseSeqRecLine(l, &ev, e)) return false;
        ev.category = 1;  // no categories: one shared category
        // The line order is the time order: use the line index as the timestamp.
        ev.timestamp = static_cast<int64_t>(events.size());
        events.push_back(ev);
        return true;
      }));
    } else if (opt.format == "taobao") {
      IPS_RETURN_IF_ERROR(ReadLines(data_path, opt, &stats, [&](std::string_view l, FieldError* e) {
        if (!ParseTaobaoLine(l, &ev, e)) return false;
        events.push_back(ev);
        return true;
      }));
    } else {  // events
      IPS_RETURN_IF_ERROR(ReadLines(data_path, opt, &stats, [&](std::string_view l, FieldError* e) {
        if (!ParseEventLine(l, &ev, e)) return false;
        events.push_back(ev);
        return true;
      }));
    }
    // An empty dataset has no items to sample negatives from: the readers refuse to open it.
    if (events.empty())
      return InvalidArgumentError(data_path + ": no usable events (" + LineSummary(stats) + ")");
    if (events.size() >= 0xffffffffULL)
      return InvalidArgumentError(opt.input + ": more than 2^32-1 events (split the input)");
    IPS_RETURN_IF_ERROR(BuildFromEvents(std::move(events), opt, protocol, data_path, &stats, &b));
  }
  if (opt.progress) opt.progress(stats.lines);

  IPS_RETURN_IF_ERROR(MakeDirs(opt.output));
  Manifest m;
  m.format = opt.format;
  m.protocol = protocol;
  m.input = opt.input + (opt.eval_input.empty() ? "" : "," + opt.eval_input);
  m.seed = opt.seed;
  m.max_history = opt.max_history;
  m.eval_negatives = protocol == "given" ? 0 : opt.eval_negatives;
  m.eval_users = opt.eval_users;
  m.min_user_events = opt.min_user_events;
  m.train_negatives = protocol == "given" ? "none" : (protocol == "ctr" ? "popularity" : "uniform");
  m.negatives_per_positive = protocol == "given" ? 0 : 1;
  m.input_lines = stats.lines;
  m.users = b.users;
  m.items = b.item_raw.size() - 1;
  m.categories = b.cat_raw.size() - 1;
  m.events = protocol == "given" ? stats.kept : b.ev_item.size();
  m.train_examples = b.train_pos.size();
  for (uint32_t t : b.rec_train) m.train_events += t;
  m.train_examples_per_epoch = m.train_examples * (1 + m.negatives_per_positive);
  m.eval_examples = b.eval_pos.size();
  m.eval_candidates = b.cands;
  m.bad_records = stats.bad;
  m.filtered = stats.filtered;
  m.history_histogram.assign(opt.max_history + 1, 0);
  for (uint32_t pos : b.train_pos) ++m.history_histogram[std::min<int64_t>(pos, opt.max_history)];
  // Every line is accounted for: kept + bad + filtered.
  uint64_t filtered = 0;
  for (const auto& [k, v] : stats.filtered) filtered += v;
  if (stats.kept + stats.bad + filtered != stats.lines)
    return InternalError("line accounting mismatch: kept " + std::to_string(stats.kept) +
                         " + bad " + std::to_string(stats.bad) + " + filtered " +
                         std::to_string(filtered) + " != lines " + std::to_string(stats.lines));

  ColumnarWriter vw(kKindVocab);
  vw.Add(shard_columns::kItemRaw, b.item_raw);
  vw.Add(shard_columns::kItemCat, b.item_cat);
  vw.Add(shard_columns::kItemCount, b.item_count);
  vw.Add(shard_columns::kCatRaw, b.cat_raw);
  IPS_ASSIGN_OR_RETURN(auto vwritten, vw.Write(opt.output + "/" + kVocabFile));
  m.vocab.file = kVocabFile;
  m.vocab.bytes = vwritten.bytes;
  m.vocab.crc = vwritten.crc;
  for (int s = 0; s < opt.shards; ++s) {
    IPS_ASSIGN_OR_RETURN(ManifestFile f, WriteShard(b, s, opt.shards, opt.output));
    m.shards.push_back(f);
  }
  IPS_RETURN_IF_ERROR(m.WriteTo(opt.output));
  RemoveStaleShards(opt.output, m);
  return m;
}

}  // namespace

StatusOr<Manifest> ConvertDataset(const ConvertOptions& opt) {
  IPS_RETURN_IF_ERROR(ValidateConvertOptions(opt));
  IPS_RETURN_IF_ERROR(CheckConvertOutput(opt.output));
  LineStats stats;
  StatusOr<Manifest> m = Convert(opt, &stats);
  // The final count, also when the conversion failed: "0 lines" after reading a million would
  // misstate where it stopped.
  if (opt.progress) opt.progress(stats.lines);
  return m;
}

}  // namespace ips
