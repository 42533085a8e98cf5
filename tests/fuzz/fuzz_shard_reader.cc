// The shard reader on hostile input, two ways (first byte picks):
//  - raw bytes as a shard file (ColumnarFile::FromBytes + ShardView::Bind);
//  - columns whose CONTENTS come from the input but whose CRCs are valid, written as a whole
//    dataset directory (vocab, shard, MANIFEST) and opened with Dataset::Open. This reaches the
//    structural checks behind the CRCs; whenever Open accepts the data, a full training epoch
//    and the evaluation set are read, which must stay in bounds (ASan) and produce ids inside
//    the vocabulary.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "worker/columnar_file.h"
#include "worker/data_reader.h"
#include "worker/manifest.h"
#include "worker/shard_schema.h"

namespace {

namespace col = ips::shard_columns;

class Input {
 public:
  Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint32_t Next(uint32_t mod) {
    uint32_t v = 0;
    for (int i = 0; i < 2 && p_ < n_; ++i) v = (v << 8) | d_[p_++];
    return mod ? v % mod : v;
  }
  template <typename T>
  std::vector<T> Vec(size_t n, uint32_t mod) {
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(Next(mod));
    return v;
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t p_ = 0;
};

// The per-process scratch directory (tmpfs when available), created and removed around every
// input (libFuzzer's -max_total_time exit skips atexit handlers, so nothing is left behind).
const std::string& Dir() {
  static const std::string dir = [] {
    struct stat st;
    const std::string base = ::stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    return base + "/ips_fuzz_shard_" + std::to_string(::getpid());
  }();
  return dir;
}

struct ScratchDir {
  ScratchDir() { ::mkdir(Dir().c_str(), 0700); }
  ~ScratchDir() {
    for (const char* f : {"/vocab.ips", "/shard.ips", "/MANIFEST"})
      std::remove((Dir() + f).c_str());
    ::rmdir(Dir().c_str());
  }
};

void Structured(Input& in) {
  const ScratchDir scratch;
  const uint32_t items = 1 + in.Next(20), cats = 1 + in.Next(5), cands = in.Next(4);
  const uint32_t negs = in.Next(2);
  // Valid by construction (so Open succeeds and the readers run), then up to 3 corruptions of a
  // random column entry (so the structural checks are exercised too).
  const size_t R = in.Next(6);
  std::vector<uint64_t> rec_off{0}, seen_off{0};
  std::vector<uint32_t> len(R), train_len(R), ev_item, ev_cat, seen;
  for (size_t r = 0; r < R; ++r) {
    len[r] = in.Next(9);
    train_len[r] = in.Next(len[r] + 1);
    std::vector<uint32_t> mine;
    for (uint32_t k = 0; k < len[r]; ++k) {
      ev_item.push_back(1 + in.Next(items));
      ev_cat.push_back(1 + in.Next(cats));
      mine.push_back(ev_item.back());
    }
    std::sort(mine.begin(), mine.end());
    mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
    seen.insert(seen.end(), mine.begin(), mine.end());
    rec_off.push_back(ev_item.size());
    seen_off.push_back(seen.size());
  }
  const size_t E = ev_item.size();
  std::vector<uint32_t> train_rec, train_pos, eval_rec, eval_pos, eval_cand;
  std::vector<uint8_t> train_label, eval_label;
  const auto rows = [&](size_t n, std::vector<uint32_t>* rec, std::vector<uint32_t>* pos,
                        std::vector<uint8_t>* label, bool with_cands) {
    for (size_t i = 0; i < n && R > 0; ++i) {
      const uint32_t r = in.Next(static_cast<uint32_t>(R));
      if (len[r] == 0) continue;
      rec->push_back(r);
      pos->push_back(in.Next(len[r]));
      label->push_back(static_cast<uint8_t>(in.Next(2)));
      if (with_cands)
        for (uint32_t c = 0; c < cands; ++c) eval_cand.push_back(1 + in.Next(items));
    }
  };
  rows(in.Next(30), &train_rec, &train_pos, &train_label, false);
  rows(in.Next(6), &eval_rec, &eval_pos, &eval_label, true);
  std::vector<uint64_t> rec_user = in.Vec<uint64_t>(R, 0);
  std::vector<int64_t> ev_ts = in.Vec<int64_t>(E, 0);
  std::vector<uint8_t> ev_action = in.Vec<uint8_t>(E, 6), ev_domain = in.Vec<uint8_t>(E, 0);
  std::vector<uint32_t>* u32[] = {&train_len, &ev_item,  &ev_cat,   &seen,     &train_rec,
                                  &train_pos, &eval_rec, &eval_pos, &eval_cand};
  std::vector<uint64_t>* u64[] = {&rec_off, &seen_off};
  for (uint32_t c = in.Next(4); c > 0; --c) {
    const uint32_t which = in.Next(11);
    if (which < 9) {
      auto& v = *u32[which];
      if (!v.empty()) v[in.Next(static_cast<uint32_t>(v.size()))] = in.Next(0) % 24;
    } else {
      auto& v = *u64[which - 9];
      v[in.Next(static_cast<uint32_t>(v.size()))] = in.Next(0) % 48;
    }
  }
  ips::ColumnarWriter w(ips::kKindShard);
  w.Add(col::kRecUser, rec_user);
  w.Add(col::kRecOffset, rec_off);
  w.Add(col::kRecTrainLen, train_len);
  w.Add(col::kRecSeenOffset, seen_off);
  w.Add(col::kSeenItem, seen);
  w.Add(col::kEvItem, ev_item);
  w.Add(col::kEvCat, ev_cat);
  w.Add(col::kEvTs, ev_ts);
  w.Add(col::kEvAction, ev_action);
  w.Add(col::kEvDomain, ev_domain);
  w.Add(col::kTrainRec, train_rec);
  w.Add(col::kTrainPos, train_pos);
  w.Add(col::kTrainLabel, train_label);
  w.Add(col::kEvalRec, eval_rec);
  w.Add(col::kEvalPos, eval_pos);
  w.Add(col::kEvalLabel, eval_label);
  w.Add(col::kEvalCand, eval_cand);
  const size_t P = train_rec.size(), V = eval_rec.size();
  ips::ColumnarWriter vw(ips::kKindVocab);
  std::vector<uint64_t> raw(items + 1);
  for (uint32_t i = 0; i <= items; ++i) raw[i] = i;
  vw.Add(col::kItemRaw, raw);
  std::vector<uint32_t> icat(items + 1, 0);
  for (uint32_t i = 1; i <= items; ++i) icat[i] = 1 + in.Next(cats);
  vw.Add(col::kItemCat, icat);
  vw.Add(col::kItemCount, in.Vec<uint64_t>(items + 1, 5));
  vw.Add(col::kCatRaw, std::vector<uint64_t>(cats + 1, 1));
  ips::Manifest m;
  m.format = "fuzz";
  m.protocol = negs ? "seqrec" : "given";
  m.train_negatives = in.Next(2) ? "popularity" : "uniform";
  m.negatives_per_positive = negs;
  m.items = items;
  m.categories = cats;
  m.eval_candidates = cands;
  m.max_history = 1 + in.Next(6);
  auto v = vw.Write(Dir() + "/vocab.ips");
  auto s = w.Write(Dir() + "/shard.ips");
  if (!v.ok() || !s.ok()) std::abort();
  m.vocab = {"vocab.ips", v->bytes, v->crc, 0, 0, 0, 0};
  m.shards.push_back({"shard.ips", s->bytes, s->crc, R, E, P, V});
  if (!m.WriteTo(Dir()).ok()) std::abort();
  auto d = ips::Dataset::Open(Dir());
  if (!d.ok()) return;
  ips::ReaderOptions ro;
  ro.batch_size = 1 + static_cast<int>(in.Next(8));
  ro.seed = in.Next(0);
  ips::TrainReader r(d->get(), {}, ro);
  ips::Batch b;
  for (int epoch = 0; epoch < 2; ++epoch) {
    r.StartEpoch(epoch);
    while (r.Next(&b))
      for (int i = 0; i < b.size; ++i)
        if (b.item[i] == 0 || b.item[i] > items || b.length[i] > b.max_len) std::abort();
  }
  ips::SequenceReader sr(d->get(), {}, ro);
  ips::SequenceBatch sb;
  while (sr.Next(&sb))
    for (uint32_t v : sb.neg)
      if (v > items) std::abort();
  ips::EvalReader e(d->get(), {}, ro);
  while (e.Next(&b))
    for (int i = 0; i < b.size; ++i)
      if (b.item[i] == 0 || b.item[i] > items) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1) {
    Input in(data + 1, size - 1);
    Structured(in);
    return 0;
  }
  auto f = ips::ColumnarFile::FromBytes("fuzz.ips", data + 1, size - 1, ips::kKindShard);
  if (!f.ok()) return 0;
  auto s = ips::ShardView::Bind(std::move(*f), 0, 0, 1);
  (void)s;
  return 0;
}
