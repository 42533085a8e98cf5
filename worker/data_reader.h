// Dataset reading: opens a converted dataset directory (MANIFEST + vocab.ips + shards), validates
// every file, and yields training batches (per-epoch shuffled, with per-epoch fresh sampled
// negatives) and evaluation batches.
//
// Negatives: training row r of shard s in epoch e gets its sampled negative from an Rng seeded by
// Mix64 of (seed, e, s, r), so a batch's content depends only on (seed, epoch, position): batches
// are identical across runs, negatives differ between epochs, and resuming is SkipTo(epoch, pos).
#ifndef IPS_WORKER_DATA_READER_H_
#define IPS_WORKER_DATA_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/columnar_file.h"
#include "worker/manifest.h"
#include "worker/negative_sampler.h"

namespace ips {

// One shard's columns (see worker/shard_schema.h), checked for internal consistency (offsets
// monotone and in range, positions inside their records, ids inside the vocabulary).
struct ShardView {
  std::unique_ptr<ColumnarFile> file;
  ColumnView<uint64_t> rec_user, rec_offset, seen_offset;
  ColumnView<uint32_t> rec_train_len, seen_item, ev_item, ev_cat;
  ColumnView<int64_t> ev_ts;
  ColumnView<uint8_t> ev_action, ev_domain;
  ColumnView<uint32_t> train_rec, train_pos, eval_rec, eval_pos, eval_cand;
  ColumnView<uint8_t> train_label, eval_label;
  size_t num_records() const { return rec_user.size; }

  // Binds and checks the columns of an opened shard file. num_items/num_categories bound the
  // ids (0 = do not check); eval_candidates is C of eval_cand. DATA_LOSS naming the file.
  static StatusOr<ShardView> Bind(std::unique_ptr<ColumnarFile> file, uint64_t num_items,
                                  uint64_t num_categories, uint64_t eval_candidates);
};

// A batch of examples, histories left-padded to max_len (like the peer). Rows [0, size).
struct Batch {
  int size = 0;
  int max_len = 0;
  std::vector<uint32_t> hist_item;  // [size * max_len], 0 = padding
  std::vector<uint32_t> hist_cat;   // [size * max_len]
  std::vector<int64_t> hist_ts;     // [size * max_len], only with ReaderOptions::history_ts
  std::vector<int32_t> length;      // valid (rightmost) history entries
  std::vector<uint32_t> item;       // target item
  std::vector<uint32_t> cat;        // target category
  std::vector<float> label;
  std::vector<int64_t> timestamp;  // the target event's time (sampled negatives: the positive's)
  std::vector<uint8_t> domain;
  std::vector<uint64_t> user;  // raw user id
  void Resize(int rows, int len, bool with_ts);
};

struct ReaderOptions {
  int batch_size = 512;
  int max_len = 0;    // history window; 0 = the manifest's max_history
  uint64_t seed = 0;  // shuffling and negatives
  bool shuffle = true;
  bool history_ts = false;
};

// An opened dataset. Immutable after Open; readers hold a pointer to it.
class Dataset {
 public:
  // Reads MANIFEST, maps vocab.ips and every shard, checks sizes against the manifest and every
  // block CRC. Errors: NOT_FOUND (missing file), DATA_LOSS (CRC, truncation, inconsistency).
  static StatusOr<std::unique_ptr<Dataset>> Open(const std::string& dir);

  const Manifest& manifest() const { return manifest_; }
  int num_shards() const { return static_cast<int>(shards_.size()); }
  const ShardView& shard(int i) const { return shards_[i]; }
  ColumnView<uint32_t> item_cat() const { return item_cat_; }
  ColumnView<uint64_t> item_raw() const { return item_raw_; }
  const NegativeSampler& sampler() const { return sampler_; }

 private:
  Dataset() = default;
  Manifest manifest_;
  std::unique_ptr<ColumnarFile> vocab_;
  ColumnView<uint32_t> item_cat_;
  ColumnView<uint64_t> item_raw_;
  std::vector<ShardView> shards_;
  NegativeSampler sampler_;
};

// Training batches over a subset of shards (a worker's shards). Not thread-safe; one per worker.
class TrainReader {
 public:
  // shards: indices into the dataset (empty = all).
  TrainReader(const Dataset* data, std::vector<int> shards, ReaderOptions options);

  // Examples one epoch yields: stored rows x (1 + negatives_per_positive).
  int64_t examples_per_epoch() const { return static_cast<int64_t>(slots_per_row_) * rows_; }
  // Starts `epoch` at its beginning (reshuffles with (seed, epoch)).
  void StartEpoch(int64_t epoch) {
    const Status ok = SkipTo(epoch, 0);  // position 0 is always in range
    (void)ok;
  }
  // Resumes inside an epoch: the next batch starts at example `position` of `epoch`'s order.
  // OUT_OF_RANGE if position > examples_per_epoch().
  Status SkipTo(int64_t epoch, int64_t position);
  // Fills *batch with up to batch_size examples; returns false (and an empty batch) at the end of
  // the epoch. The last batch may be smaller.
  bool Next(Batch* batch);
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }

 private:
  // Where a slot's data lives; resolved for a whole batch first so that the dependent loads
  // (row -> record -> events) of different rows overlap (software prefetch, stage by stage).
  struct SlotRef {
    const ShardView* shard;
    int shard_index;
    uint32_t k;    // 0 = the stored row, >= 1 = a sampled negative
    uint64_t row;  // row within the shard
    uint32_t rec, pos;
  };
  void FillRow(Batch* b, int row, const SlotRef& ref) const;
  std::vector<SlotRef> refs_;

  const Dataset* data_;
  std::vector<int> shards_;
  ReaderOptions opt_;
  int max_len_;
  uint32_t slots_per_row_;
  std::vector<uint64_t> row_begin_;  // prefix sums of rows per selected shard
  uint64_t rows_ = 0;
  std::vector<uint64_t> order_;  // slot permutation of this epoch (identity without shuffle)
  int64_t epoch_ = 0;
  int64_t position_ = 0;
};

// SASRec-style training batches (the peer's `sasrec_epoch`): every record with >= 2 training
// events once per epoch, in an order shuffled with (seed, epoch). Row r: seq = the last max_len
// of train[:-1], pos = train[1:] aligned with it (the next item at every step), neg = one
// sampled never-interacted item per valid step (drawn from (seed, epoch, shard, record), fresh
// every epoch); all left-padded with 0, `length` = valid steps. Not thread-safe.
struct SequenceBatch {
  int size = 0;
  int max_len = 0;
  std::vector<uint32_t> seq, seq_cat;  // [size * max_len]
  std::vector<uint32_t> pos, pos_cat;  // [size * max_len]
  std::vector<uint32_t> neg, neg_cat;  // [size * max_len]
  std::vector<int32_t> length;
  std::vector<uint64_t> user;
};

class SequenceReader {
 public:
  SequenceReader(const Dataset* data, std::vector<int> shards, ReaderOptions options);
  int64_t sequences_per_epoch() const { return static_cast<int64_t>(recs_.size()); }
  void StartEpoch(int64_t epoch) {
    const Status ok = SkipTo(epoch, 0);  // position 0 is always in range
    (void)ok;
  }
  // OUT_OF_RANGE if position > sequences_per_epoch().
  Status SkipTo(int64_t epoch, int64_t position);
  bool Next(SequenceBatch* batch);

 private:
  const Dataset* data_;
  ReaderOptions opt_;
  int max_len_;
  std::vector<std::pair<int, uint32_t>> recs_;  // (shard, record) with >= 2 training events
  std::vector<uint32_t> order_;
  int64_t epoch_ = -1;
  int64_t position_ = 0;
};

// Evaluation rows: one row per (evaluated user, candidate) — candidate 0 is the held-out item
// with label 1, then the sampled negatives with label 0 — or, for DIEN's given rows, one row per
// given example with its own label. Batches hold whole candidate lists (batch_size is rounded
// down to a multiple of the list size, at least one list).
class EvalReader {
 public:
  EvalReader(const Dataset* data, std::vector<int> shards, ReaderOptions options);
  int64_t num_lists() const { return static_cast<int64_t>(lists_.size()); }
  int candidates_per_list() const { return cands_; }
  void Reset() { next_ = 0; }
  bool Next(Batch* batch);

 private:
  const Dataset* data_;
  ReaderOptions opt_;
  int max_len_;
  int cands_;
  std::vector<std::pair<int, uint64_t>> lists_;  // (shard, eval row)
  size_t next_ = 0;
};

}  // namespace ips

#endif  // IPS_WORKER_DATA_READER_H_
