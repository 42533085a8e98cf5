#include "worker/data_reader.h"

#include <algorithm>
#include <cstring>

#include "common/random.h"
#include "worker/shard_schema.h"

namespace ips {
namespace {

namespace col = shard_columns;

Status Inconsistent(const ColumnarFile& f, const std::string& what) {
  return DataLossError(f.name() + ": inconsistent shard: " + what);
}

// Positions row `r` of `rows` with (rec, pos) must name an existing event of the record.
Status CheckRows(const ColumnarFile& f, const char* name, const ColumnView<uint32_t>& rec,
                 const ColumnView<uint32_t>& pos, const ColumnView<uint8_t>& label,
                 const ColumnView<uint64_t>& rec_offset) {
  if (rec.size != pos.size || rec.size != label.size)
    return Inconsistent(f, std::string(name) + " columns differ in length");
  const size_t R = rec_offset.size - 1;
  for (size_t i = 0; i < rec.size; ++i) {
    if (rec[i] >= R || pos[i] >= rec_offset[rec[i] + 1] - rec_offset[rec[i]] || label[i] > 1)
      return Inconsistent(
          f, std::string(name) + " row " + std::to_string(i) + " points outside its record");
  }
  return Status::Ok();
}

// Writes the history before event `end` (exclusive, absolute index) of length n <= L into row.
inline void CopyHistory(const ShardView& s, uint64_t end, int n, int L, uint32_t* items,
                        uint32_t* cats, int64_t* ts) {
  const int pad = L - n;
  if (pad > 0) {
    std::memset(items, 0, pad * sizeof(uint32_t));
    std::memset(cats, 0, pad * sizeof(uint32_t));
    if (ts) std::memset(ts, 0, pad * sizeof(int64_t));
  }
  if (n > 0) {
    std::memcpy(items + pad, s.ev_item.data + end - n, n * sizeof(uint32_t));
    std::memcpy(cats + pad, s.ev_cat.data + end - n, n * sizeof(uint32_t));
    if (ts) std::memcpy(ts + pad, s.ev_ts.data + end - n, n * sizeof(int64_t));
  }
}

}  // namespace

void Batch::Resize(int rows, int len, bool with_ts) {
  size = rows;
  max_len = len;
  const size_t cells = static_cast<size_t>(rows) * len;
  hist_item.resize(cells);
  hist_cat.resize(cells);
  hist_ts.resize(with_ts ? cells : 0);
  length.resize(rows);
  item.resize(rows);
  cat.resize(rows);
  label.resize(rows);
  timestamp.resize(rows);
  domain.resize(rows);
  user.resize(rows);
}

StatusOr<ShardView> ShardView::Bind(std::unique_ptr<ColumnarFile> file, uint64_t num_items,
                                    uint64_t num_categories, uint64_t eval_candidates) {
  ShardView s;
  const ColumnarFile& f = *file;
  IPS_ASSIGN_OR_RETURN(s.rec_user, f.Column<uint64_t>(col::kRecUser));
  IPS_ASSIGN_OR_RETURN(s.rec_offset, f.Column<uint64_t>(col::kRecOffset));
  IPS_ASSIGN_OR_RETURN(s.rec_train_len, f.Column<uint32_t>(col::kRecTrainLen));
  IPS_ASSIGN_OR_RETURN(s.seen_offset, f.Column<uint64_t>(col::kRecSeenOffset));
  IPS_ASSIGN_OR_RETURN(s.seen_item, f.Column<uint32_t>(col::kSeenItem));
  IPS_ASSIGN_OR_RETURN(s.ev_item, f.Column<uint32_t>(col::kEvItem));
  IPS_ASSIGN_OR_RETURN(s.ev_cat, f.Column<uint32_t>(col::kEvCat));
  IPS_ASSIGN_OR_RETURN(s.ev_ts, f.Column<int64_t>(col::kEvTs));
  IPS_ASSIGN_OR_RETURN(s.ev_action, f.Column<uint8_t>(col::kEvAction));
  IPS_ASSIGN_OR_RETURN(s.ev_domain, f.Column<uint8_t>(col::kEvDomain));
  IPS_ASSIGN_OR_RETURN(s.train_rec, f.Column<uint32_t>(col::kTrainRec));
  IPS_ASSIGN_OR_RETURN(s.train_pos, f.Column<uint32_t>(col::kTrainPos));
  IPS_ASSIGN_OR_RETURN(s.train_label, f.Column<uint8_t>(col::kTrainLabel));
  IPS_ASSIGN_OR_RETURN(s.eval_rec, f.Column<uint32_t>(col::kEvalRec));
  IPS_ASSIGN_OR_RETURN(s.eval_pos, f.Column<uint32_t>(col::kEvalPos));
  IPS_ASSIGN_OR_RETURN(s.eval_label, f.Column<uint8_t>(col::kEvalLabel));
  IPS_ASSIGN_OR_RETURN(s.eval_cand, f.Column<uint32_t>(col::kEvalCand));
  // Structure: everything the reader indexes with is checked once here, so batching needs no
  // bounds checks and a consistent-CRC-but-wrong file cannot make it read out of bounds.
  const size_t R = s.rec_user.size, E = s.ev_item.size;
  if (R >= 0xffffffffULL) return Inconsistent(f, "too many records");
  if (s.rec_offset.size != R + 1 || s.rec_train_len.size != R || s.seen_offset.size != R + 1)
    return Inconsistent(f, "record columns differ in length");
  if (s.ev_cat.size != E || s.ev_ts.size != E || s.ev_action.size != E || s.ev_domain.size != E)
    return Inconsistent(f, "event columns differ in length");
  if (s.rec_offset[0] != 0 || s.rec_offset[R] != E || s.seen_offset[0] != 0 ||
      s.seen_offset[R] != s.seen_item.size)
    return Inconsistent(f, "offsets do not span their columns");
  for (size_t r = 0; r < R; ++r) {
    if (s.rec_offset[r + 1] < s.rec_offset[r] || s.seen_offset[r + 1] < s.seen_offset[r] ||
        s.rec_offset[r + 1] - s.rec_offset[r] >= 0xffffffffULL ||
        s.rec_train_len[r] > s.rec_offset[r + 1] - s.rec_offset[r])
      return Inconsistent(f, "record " + std::to_string(r) + " has bad offsets");
    for (uint64_t k = s.seen_offset[r] + 1; k < s.seen_offset[r + 1]; ++k)
      if (s.seen_item[k] <= s.seen_item[k - 1])
        return Inconsistent(f, "record " + std::to_string(r) + " seen items not sorted");
  }
  for (size_t i = 0; i < E; ++i) {
    if (s.ev_item[i] == 0 || (num_items && s.ev_item[i] > num_items) || s.ev_cat[i] == 0 ||
        (num_categories && s.ev_cat[i] > num_categories))
      return Inconsistent(f, "event " + std::to_string(i) + " has an id outside the vocabulary");
  }
  IPS_RETURN_IF_ERROR(CheckRows(f, "train", s.train_rec, s.train_pos, s.train_label, s.rec_offset));
  IPS_RETURN_IF_ERROR(CheckRows(f, "eval", s.eval_rec, s.eval_pos, s.eval_label, s.rec_offset));
  if (s.eval_cand.size != s.eval_rec.size * eval_candidates)
    return Inconsistent(f, "eval_cand has " + std::to_string(s.eval_cand.size) +
                               " entries, expected " +
                               std::to_string(s.eval_rec.size * eval_candidates));
  for (size_t i = 0; i < s.eval_cand.size; ++i)
    if (s.eval_cand[i] == 0 || (num_items && s.eval_cand[i] > num_items))
      return Inconsistent(f, "eval candidate " + std::to_string(i) + " outside the vocabulary");
  s.file = std::move(file);
  return s;
}

StatusOr<std::unique_ptr<Dataset>> Dataset::Open(const std::string& dir) {
  std::unique_ptr<Dataset> d(new Dataset());
  IPS_ASSIGN_OR_RETURN(d->manifest_, Manifest::ReadFrom(dir));
  const Manifest& m = d->manifest_;
  if (m.items >= 0xffffffffULL || m.categories >= 0xffffffffULL)
    return DataLossError(dir + "/MANIFEST: item/category counts out of range");
  const auto open = [&](const ManifestFile& mf,
                        uint32_t kind) -> StatusOr<std::unique_ptr<ColumnarFile>> {
    IPS_ASSIGN_OR_RETURN(auto f, ColumnarFile::Open(dir + "/" + mf.file, kind));
    if (f->size_bytes() != mf.bytes)
      return DataLossError(f->name() + ": truncated: expected " + std::to_string(mf.bytes) +
                           " bytes, found " + std::to_string(f->size_bytes()));
    return f;
  };
  IPS_ASSIGN_OR_RETURN(d->vocab_, open(m.vocab, kKindVocab));
  IPS_ASSIGN_OR_RETURN(d->item_cat_, d->vocab_->Column<uint32_t>(shard_columns::kItemCat));
  IPS_ASSIGN_OR_RETURN(d->item_raw_, d->vocab_->Column<uint64_t>(shard_columns::kItemRaw));
  IPS_ASSIGN_OR_RETURN(auto counts, d->vocab_->Column<uint64_t>(shard_columns::kItemCount));
  if (d->item_cat_.size != m.items + 1 || d->item_raw_.size != m.items + 1 ||
      counts.size != m.items + 1)
    return DataLossError(d->vocab_->name() + ": vocabulary has " +
                         std::to_string(d->item_cat_.size) + " entries, manifest says " +
                         std::to_string(m.items) + " items");
  for (size_t i = 1; i < d->item_cat_.size; ++i)
    if (d->item_cat_[i] == 0 || d->item_cat_[i] > m.categories)
      return DataLossError(d->vocab_->name() + ": item " + std::to_string(i) +
                           " has a category outside 1.." + std::to_string(m.categories));
  const uint32_t n_items = static_cast<uint32_t>(m.items);
  d->sampler_ = m.train_negatives == "popularity"
                    ? NegativeSampler::Popularity(counts.data, n_items)
                    : NegativeSampler::Uniform(n_items);
  if (m.negatives_per_positive > 0 && n_items == 0)
    return DataLossError(dir + "/MANIFEST: sampled negatives need at least one item");
  if (m.negatives_per_positive > 16)
    return DataLossError(dir + "/MANIFEST: negatives_per_positive out of range");
  for (const ManifestFile& mf : m.shards) {
    IPS_ASSIGN_OR_RETURN(auto f, open(mf, kKindShard));
    IPS_ASSIGN_OR_RETURN(ShardView s,
                         ShardView::Bind(std::move(f), m.items, m.categories, m.eval_candidates));
    if (s.train_rec.size != mf.train_examples || s.eval_rec.size != mf.eval_examples ||
        s.ev_item.size != mf.events)
      return DataLossError(s.file->name() + ": counts differ from the manifest");
    d->shards_.push_back(std::move(s));
  }
  return d;
}

TrainReader::TrainReader(const Dataset* data, std::vector<int> shards, ReaderOptions options)
    : data_(data), shards_(std::move(shards)), opt_(options) {
  if (shards_.empty())
    for (int i = 0; i < data_->num_shards(); ++i) shards_.push_back(i);
  max_len_ = opt_.max_len > 0 ? opt_.max_len : static_cast<int>(data_->manifest().max_history);
  if (opt_.batch_size < 1) opt_.batch_size = 1;
  slots_per_row_ = 1 + static_cast<uint32_t>(data_->manifest().negatives_per_positive);
  row_begin_.push_back(0);
  for (int s : shards_) row_begin_.push_back(row_begin_.back() + data_->shard(s).train_rec.size);
  rows_ = row_begin_.back();
  StartEpoch(0);
}

namespace {

// A reader's SkipTo position (from a resumed checkpoint) within an epoch of `total` `unit`s: one
// past the epoch was saved for other data.
Status CheckResumePosition(int64_t position, int64_t total, const char* unit) {
  if (position < 0) return OutOfRangeError("SkipTo: negative position " + std::to_string(position));
  if (position > total)
    return OutOfRangeError("SkipTo: the checkpoint's position " + std::to_string(position) +
                           " is past this dataset's epoch size of " + std::to_string(total) + " " +
                           unit + ": the checkpoint was probably written for another dataset");
  return Status::Ok();
}

}  // namespace

Status TrainReader::SkipTo(int64_t epoch, int64_t position) {
  const int64_t total = examples_per_epoch();
  IPS_RETURN_IF_ERROR(CheckResumePosition(position, total, "examples"));
  if (epoch != epoch_ || order_.size() != static_cast<size_t>(total)) {
    order_.resize(total);
    for (int64_t i = 0; i < total; ++i) order_[i] = static_cast<uint64_t>(i);
    if (opt_.shuffle) {
      Rng rng(Mix64(opt_.seed ^ 0x73687566ULL) ^ Mix64(static_cast<uint64_t>(epoch) + 1));
      for (int64_t i = total - 1; i > 0; --i)
        std::swap(order_[i], order_[rng.UniformInt(static_cast<uint64_t>(i) + 1)]);
    }
  }
  epoch_ = epoch;
  position_ = position;
  return Status::Ok();
}

void TrainReader::FillRow(Batch* b, int row, const SlotRef& ref) const {
  const ShardView& s = *ref.shard;
  const uint32_t rec = ref.rec, pos = ref.pos;
  const uint64_t target = s.rec_offset[rec] + pos;
  const int n = static_cast<int>(std::min<uint64_t>(pos, static_cast<uint64_t>(max_len_)));
  const size_t cell = static_cast<size_t>(row) * max_len_;
  CopyHistory(s, target, n, max_len_, b->hist_item.data() + cell, b->hist_cat.data() + cell,
              opt_.history_ts ? b->hist_ts.data() + cell : nullptr);
  b->length[row] = n;
  b->timestamp[row] = s.ev_ts[target];
  b->domain[row] = s.ev_domain[target];
  b->user[row] = s.rec_user[rec];
  if (ref.k == 0) {
    b->item[row] = s.ev_item[target];
    b->cat[row] = s.ev_cat[target];
    b->label[row] = static_cast<float>(s.train_label[ref.row]);
    return;
  }
  // A sampled negative: a pure function of (seed, epoch, shard, row, k).
  Rng rng(Mix64(opt_.seed ^ Mix64(static_cast<uint64_t>(epoch_) * 0x9e3779b97f4a7c15ULL + ref.k)) ^
          Mix64((static_cast<uint64_t>(ref.shard_index) << 40) ^ ref.row));
  const uint64_t so = s.seen_offset[rec];
  const uint32_t neg =
      data_->sampler().Sample(rng, s.seen_item.data + so, s.seen_offset[rec + 1] - so);
  b->item[row] = neg;
  b->cat[row] = data_->item_cat()[neg];
  b->label[row] = 0.0f;
}

bool TrainReader::Next(Batch* batch) {
  const int64_t total = examples_per_epoch();
  const int rows = static_cast<int>(std::min<int64_t>(opt_.batch_size, total - position_));
  batch->Resize(std::max(rows, 0), max_len_, opt_.history_ts);
  if (rows <= 0) return false;
  refs_.resize(rows);
  // Stage 1: slot -> (shard, row); prefetch the row's record reference.
  for (int i = 0; i < rows; ++i) {
    const uint64_t slot = order_[position_ + i];
    const uint64_t g = slot / slots_per_row_;
    SlotRef& ref = refs_[i];
    ref.k = static_cast<uint32_t>(slot - g * slots_per_row_);
    size_t si = 0;
    while (row_begin_[si + 1] <= g) ++si;  // few shards per worker: a linear scan is fastest
    ref.shard_index = shards_[si];
    ref.shard = &data_->shard(ref.shard_index);
    ref.row = g - row_begin_[si];
    __builtin_prefetch(ref.shard->train_rec.data + ref.row);
    __builtin_prefetch(ref.shard->train_pos.data + ref.row);
  }
  // Stage 2: row -> (record, position); prefetch the record's offsets.
  for (int i = 0; i < rows; ++i) {
    SlotRef& ref = refs_[i];
    ref.rec = ref.shard->train_rec[ref.row];
    ref.pos = ref.shard->train_pos[ref.row];
    __builtin_prefetch(ref.shard->rec_offset.data + ref.rec);
    __builtin_prefetch(ref.shard->rec_user.data + ref.rec);
    if (ref.k != 0) __builtin_prefetch(ref.shard->seen_offset.data + ref.rec);
  }
  // Stage 3: prefetch the history's events (the window ends at the target).
  for (int i = 0; i < rows; ++i) {
    const SlotRef& ref = refs_[i];
    const uint64_t target = ref.shard->rec_offset[ref.rec] + ref.pos;
    const uint32_t* it = ref.shard->ev_item.data + target;
    const uint32_t* ct = ref.shard->ev_cat.data + target;
    const int n = static_cast<int>(std::min<uint64_t>(ref.pos, static_cast<uint64_t>(max_len_)));
    for (int off = 0; off <= n; off += 16) {
      __builtin_prefetch(it - off);
      __builtin_prefetch(ct - off);
    }
    __builtin_prefetch(ref.shard->ev_ts.data + target);
    __builtin_prefetch(ref.shard->ev_domain.data + target);
    if (ref.k != 0) {
      // The negative's rejection test binary-searches the user's seen items: bring them in.
      const uint64_t so = ref.shard->seen_offset[ref.rec];
      const uint64_t se = std::min(ref.shard->seen_offset[ref.rec + 1], so + 256);
      for (uint64_t k = so; k < se; k += 16) __builtin_prefetch(ref.shard->seen_item.data + k);
    }
  }
  for (int i = 0; i < rows; ++i) FillRow(batch, i, refs_[i]);
  position_ += rows;
  return true;
}

SequenceReader::SequenceReader(const Dataset* data, std::vector<int> shards, ReaderOptions options)
    : data_(data), opt_(options) {
  if (shards.empty())
    for (int i = 0; i < data_->num_shards(); ++i) shards.push_back(i);
  max_len_ = opt_.max_len > 0 ? opt_.max_len : static_cast<int>(data_->manifest().max_history);
  if (opt_.batch_size < 1) opt_.batch_size = 1;
  for (int s : shards) {
    const ShardView& v = data_->shard(s);
    for (uint32_t r = 0; r < v.num_records(); ++r)
      if (v.rec_train_len[r] >= 2) recs_.emplace_back(s, r);
  }
  StartEpoch(0);
}

Status SequenceReader::SkipTo(int64_t epoch, int64_t position) {
  const int64_t total = sequences_per_epoch();
  IPS_RETURN_IF_ERROR(CheckResumePosition(position, total, "sequences"));
  if (epoch != epoch_) {
    order_.resize(total);
    for (int64_t i = 0; i < total; ++i) order_[i] = static_cast<uint32_t>(i);
    if (opt_.shuffle) {
      Rng rng(Mix64(opt_.seed ^ 0x73657173ULL) ^ Mix64(static_cast<uint64_t>(epoch) + 1));
      for (int64_t i = total - 1; i > 0; --i)
        std::swap(order_[i], order_[rng.UniformInt(static_cast<uint64_t>(i) + 1)]);
    }
  }
  epoch_ = epoch;
  position_ = position;
  return Status::Ok();
}

bool SequenceReader::Next(SequenceBatch* b) {
  const int rows =
      static_cast<int>(std::min<int64_t>(opt_.batch_size, sequences_per_epoch() - position_));
  const int L = max_len_;
  const size_t cells = static_cast<size_t>(std::max(rows, 0)) * L;
  b->size = std::max(rows, 0);
  b->max_len = L;
  for (auto* v : {&b->seq, &b->seq_cat, &b->pos, &b->pos_cat, &b->neg, &b->neg_cat})
    v->assign(cells, 0);
  b->length.assign(b->size, 0);
  b->user.assign(b->size, 0);
  if (rows <= 0) return false;
  const auto& item_cat = data_->item_cat();
  for (int i = 0; i < rows; ++i) {
    const auto [si, rec] = recs_[order_[position_ + i]];
    const ShardView& s = data_->shard(si);
    const uint64_t off = s.rec_offset[rec];
    const uint32_t train = s.rec_train_len[rec];
    const int n = static_cast<int>(std::min<uint32_t>(train - 1, static_cast<uint32_t>(L)));
    const size_t cell = static_cast<size_t>(i) * L + (L - n);
    // seq = train[train-1-n, train-1), pos = train[train-n, train).
    std::memcpy(&b->seq[cell], s.ev_item.data + off + train - 1 - n, n * sizeof(uint32_t));
    std::memcpy(&b->seq_cat[cell], s.ev_cat.data + off + train - 1 - n, n * sizeof(uint32_t));
    std::memcpy(&b->pos[cell], s.ev_item.data + off + train - n, n * sizeof(uint32_t));
    std::memcpy(&b->pos_cat[cell], s.ev_cat.data + off + train - n, n * sizeof(uint32_t));
    Rng rng(Mix64(opt_.seed ^ Mix64(static_cast<uint64_t>(epoch_) * 0x9e3779b97f4a7c15ULL)) ^
            Mix64((static_cast<uint64_t>(si) << 40) ^ rec ^ 0x5a5a000000000000ULL));
    const uint64_t so = s.seen_offset[rec];
    const uint64_t sn = s.seen_offset[rec + 1] - so;
    for (int k = 0; k < n; ++k) {
      const uint32_t neg = data_->sampler().num_items() == 0
                               ? 0
                               : data_->sampler().Sample(rng, s.seen_item.data + so, sn);
      b->neg[cell + k] = neg;
      b->neg_cat[cell + k] = item_cat[neg];
    }
    b->length[i] = n;
    b->user[i] = s.rec_user[rec];
  }
  position_ += rows;
  return true;
}

EvalReader::EvalReader(const Dataset* data, std::vector<int> shards, ReaderOptions options)
    : data_(data), opt_(options) {
  if (shards.empty())
    for (int i = 0; i < data_->num_shards(); ++i) shards.push_back(i);
  max_len_ = opt_.max_len > 0 ? opt_.max_len : static_cast<int>(data_->manifest().max_history);
  cands_ = std::max<int>(1, static_cast<int>(data_->manifest().eval_candidates));
  for (int s : shards)
    for (uint64_t r = 0; r < data_->shard(s).eval_rec.size; ++r) lists_.emplace_back(s, r);
  // Evaluate users in raw-user-id order regardless of sharding (stable, comparable output).
  std::stable_sort(lists_.begin(), lists_.end(), [&](const auto& a, const auto& b) {
    const ShardView& sa = data_->shard(a.first);
    const ShardView& sb = data_->shard(b.first);
    return sa.rec_user[sa.eval_rec[a.second]] < sb.rec_user[sb.eval_rec[b.second]];
  });
}

bool EvalReader::Next(Batch* batch) {
  const int per_batch = std::max(1, opt_.batch_size / cands_);
  const size_t n_lists = std::min<size_t>(per_batch, lists_.size() - next_);
  batch->Resize(static_cast<int>(n_lists) * cands_, max_len_, opt_.history_ts);
  if (n_lists == 0) return false;
  const bool given = data_->manifest().eval_candidates == 0;
  int row = 0;
  for (size_t l = 0; l < n_lists; ++l) {
    const auto [si, r] = lists_[next_ + l];
    const ShardView& s = data_->shard(si);
    const uint32_t rec = s.eval_rec[r], pos = s.eval_pos[r];
    const uint64_t target = s.rec_offset[rec] + pos;
    const int n = static_cast<int>(std::min<uint64_t>(pos, static_cast<uint64_t>(max_len_)));
    for (int c = 0; c < cands_; ++c, ++row) {
      const size_t cell = static_cast<size_t>(row) * max_len_;
      CopyHistory(s, target, n, max_len_, batch->hist_item.data() + cell,
                  batch->hist_cat.data() + cell,
                  opt_.history_ts ? batch->hist_ts.data() + cell : nullptr);
      batch->length[row] = n;
      batch->timestamp[row] = s.ev_ts[target];
      batch->domain[row] = s.ev_domain[target];
      batch->user[row] = s.rec_user[rec];
      if (given) {
        batch->item[row] = s.ev_item[target];
        batch->cat[row] = s.ev_cat[target];
        batch->label[row] = static_cast<float>(s.eval_label[r]);
      } else {
        const uint32_t item = s.eval_cand[r * cands_ + c];
        batch->item[row] = item;
        batch->cat[row] = data_->item_cat()[item];
        batch->label[row] = c == 0 ? 1.0f : 0.0f;
      }
    }
  }
  next_ += n_lists;
  return true;
}

}  // namespace ips
