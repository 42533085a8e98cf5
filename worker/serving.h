// Serving: the versioned bundle a trained model leaves the cluster in, and the scorer that loads
// it. Owns the bundle format, PublishBundle (any in-memory model state -> a bundle version: what
// streaming training publishes), `ips export`'s conversion of a checkpoint into a bundle, the
// read-only row maps, request scoring and the hot reload of newer bundles. The model math is
// models/'s (built from the bundle's config by worker/model_factory.h), so a bundle scores exactly
// as the trainer evaluates: inference-mode Forward on the same rows (missing keys read as zeros,
// like the store's read-only Lookup). DIN on AVX-512 CPUs scores through models/din_serving.h
// instead (one history against many candidates: the same logits within 1e-5, about half the
// work); a serving loop that reuses its buffers (BundleServer::HandleLine into one string)
// allocates nothing per request.
//
// Layout: BUNDLE/CURRENT names the live version directory BUNDLE/v-<n>, which holds
//   MANIFEST         proto/checkpoint.proto BundleManifest (framed, CRC32C trailer): versions,
//                    config text, every file's size and CRC32C, fp16, min_count, source step
//   dense.bin        the model's dense weights and non-trained state (worker/checkpoint.h format)
//   rows-<table>.bin keys and rows of one table (float32 or fp16); in a delta bundle (manifest
//                    delta_of = base version) only the changed rows plus the removed keys
//   item_cats.bin    optional (role OTHER): the item -> category map of the training data, so
//                    requests may omit categories and MIND retrieval scores item + category rows.
//                    Absent: the bundle has no map (a delta without it inherits its base's).
//   LOCK             the writer lock (worker/checkpoint.h DirLock): one writer per root
// Export writes v-<n+1> under a temporary name, fsyncs and renames it, then replaces CURRENT
// atomically; a server watching BUNDLE picks the new version up between requests.
//
// Writers: one per root. `ips export` holds BUNDLE/LOCK while it writes, a stream's publisher
// (`ips train --stream --stream_publish_dir`) for its whole run (BundleWriter); a second writer is
// refused naming the first one's pid (two writers staged the same tmp-v-<n> and published each
// other's half-written files). Servers take no lock. A writer refuses a root that is not a bundle
// root (a checkpoint, a dataset, any other non-empty directory: CheckBundleRoot), a model that a
// bundle cannot hold (a sequence model: CheckBundleModelType), and a model of another type than
// the root's current version (a server following the root would switch model type).
//
// Thread safety: a Bundle is immutable (shared between threads); a Scorer is used by one thread;
// BundleServer's methods are called from one thread while its watcher thread loads new versions.
#ifndef IPS_WORKER_SERVING_H_
#define IPS_WORKER_SERVING_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
#include "models/din_serving.h"
#include "models/model.h"
#include "ps/dynamic_table.h"
#include "worker/checkpoint.h"

namespace ips {

namespace config {
class Config;
}  // namespace config

struct ExportOptions {
  std::string checkpoint;  // a checkpoint root or one ckpt-<step> directory
  std::string output;      // the bundle root (created when missing)
  bool fp16 = false;       // store rows as IEEE half
  // Drop rows used fewer than this many times (LFU count); refused when it would drop every row
  // of a table (a bundle of all-zero rows scores every candidate alike).
  int64_t min_count = 0;
  int keep_versions = 3;  // older v-<n> directories are removed (bases of kept deltas stay)
  // Write only the rows that differ from the bundle's current version (and the keys it no longer
  // has): a small, fast-to-publish update for streaming training. The current version must have
  // the same precision and table widths (INVALID_ARGUMENT naming both otherwise). When the output
  // has no current version yet (no CURRENT) there is nothing to diff against: a full bundle is
  // written and ExportResult::delta_skipped says why, so a publisher that always asks for a delta
  // needs no special first run, and its caller can still tell the user.
  bool delta = false;
  // A dataset directory whose vocab gives the item -> category map, for checkpoints whose config
  // names none (empty: the config's data.train_dir when it opens, or its synthetic catalogue;
  // otherwise the bundle records that it has no map). Its items are numbered by its vocabulary:
  // the dataset used (named here, or the config's) must have the vocabulary the checkpoint
  // records (worker/checkpoint.h DatasetVocabulary; checkpoints of synthetic runs and older ones
  // record none and are not checked).
  std::string dataset;
};

class Bundle;

struct ExportResult {
  std::string path;  // output/v-<n>
  int64_t version = 0;
  int64_t step = 0;
  int64_t rows = 0;          // rows written over all tables
  int64_t rows_dropped = 0;  // by min_count
  int64_t rows_removed = 0;  // delta: keys of the base no longer present
  int64_t delta_of = 0;      // delta: the base version (0 = a full bundle)
  // options.delta asked for a delta but a full bundle was written, and why: "no_base" (the output
  // had no current version). Empty otherwise.
  std::string delta_skipped;
  int64_t bytes = 0;
  bool item_cats = false;  // the bundle (or its base) has an item -> category map
  // The published version as Bundle::Load would read it (PublishBundle only): a streaming
  // publisher keeps it as the base of its next delta instead of re-reading the chain.
  std::shared_ptr<const Bundle> bundle;
};

// A model state to publish, referenced in place (a live trainer and its store, or a checkpoint
// loaded into memory). Nothing is owned; everything must stay unchanged during PublishBundle.
struct BundleSource {
  std::string config_text;  // text-format config the Scorer builds the model from
  int64_t step = 0;
  std::string origin;  // recorded in the manifest (source_checkpoint), e.g. "stream:<source>"
  std::vector<TensorRef> tensors;  // "dense/..." and "model_state/..." (others are ignored)
  std::vector<const ps::DynamicTable*> tables;
  // Item id -> category id (index = item); nullptr: no map. A delta only writes it when it
  // differs from the base's.
  std::shared_ptr<const std::vector<uint32_t>> item_cats;
};

// The model types a serving bundle holds (the CTR models; SASRec and GRU4Rec rank next items
// from a sequence and have no bundle format): OK, or FAILED_PRECONDITION "<command>: <where>:
// model.type SASREC is a sequence model; <command> supports model.type DIN, DIEN, POOLED, MIND
// or BST (the CTR models)". `command` is how the user ran it ("`ips export`"), `where` what holds
// the config (may be empty).
Status CheckBundleModelType(const config::Config& config, const std::string& command,
                            const std::string& where = "");

// Whether a bundle may be written into `root` (nothing is written or created): OK when it does
// not exist, is empty (hidden files aside), holds only what a bundle writer writes (CURRENT,
// LOCK, v-<n>, tmp-v-<n>) or is a bundle root (CURRENT or v-<n> directories; other files beside
// them are left alone). First of all, a root on a kernel pseudo file system (/proc, /sys, a
// cgroup or configfs mount, ...; or one that would be created in a directory there) is refused
// (ps::CheckNotOnPseudoFileSystem, ps/checkpoint_io.h: FAILED_PRECONDITION "<what> ROOT is on
// procfs, ..." or "... would be created in AT, which is on procfs, ..."): as root, /proc's and
// /sys's directories pass every check below, and a new directory on cgroup or configfs is a
// kernel object. Otherwise FAILED_PRECONDITION "<what> ROOT: ..." naming what it is (worker/
// manifest_magic.h InspectDirectory, the description `ips data convert --output` gives too): not
// a directory, a converted dataset, a training checkpoint or checkpoint root, one version v-<n> of
// a bundle (pass its root), another non-empty directory (its first entries), or a missing root
// that would be created inside a checkpoint, dataset or bundle root (whose writer would remove or
// overwrite it). `what` names root as the user gave it ("--output", "--stream_publish_dir").
Status CheckBundleRoot(const std::string& root, const std::string& what);

// Holds a bundle root for writing: from Open until destroyed no other BundleWriter (`ips export`,
// a stream's publisher; in this or another process) can open it. Thread safety: one thread.
class BundleWriter {
 public:
  // CheckBundleRoot, then creates `root` when missing and takes ROOT/LOCK. Errors:
  // CheckBundleRoot's; FAILED_PRECONDITION "<what> ROOT is in use by another run (pid N): ..." when
  // another writer holds it; INTERNAL naming the path on I/O errors.
  static StatusOr<std::unique_ptr<BundleWriter>> Open(const std::string& root,
                                                      const std::string& what = "--output");
  BundleWriter(const BundleWriter&) = delete;
  BundleWriter& operator=(const BundleWriter&) = delete;

  // Refuses a model of another type than the one of the root's current version (a server that
  // follows the root would switch model type between two requests): FAILED_PRECONDITION naming
  // the root, its current version's model and `config_text`'s. OK when the root has no current
  // version, or one whose manifest or config cannot be read (a new version replaces it).
  Status CheckModelType(const std::string& config_text) const;

  // Writes `source` as the root's next version (options.output must be empty or the root;
  // options.checkpoint and options.dataset unused): full, or with options.delta only the rows that
  // differ from `base` (the root's current version; nullptr: loaded from the root). Checks first
  // (nothing written when they fail): CheckBundleModelType; the model builds from the config and
  // takes the tensors; CheckModelType; options.min_count keeps at least one row of every table
  // that has rows (INVALID_ARGUMENT naming the table, its rows and the most uses of a row).
  StatusOr<ExportResult> Publish(const BundleSource& source, const ExportOptions& options,
                                 std::shared_ptr<const Bundle> base = nullptr);

  const std::string& root() const { return root_; }

 private:
  BundleWriter(std::string root, std::string what, std::unique_ptr<DirLock> lock)
      : root_(std::move(root)), what_(std::move(what)), lock_(std::move(lock)) {}
  // Publish's checks that need no root (the source alone): the bundle's in-memory copy (dense
  // tensors) when they pass.
  static StatusOr<std::shared_ptr<Bundle>> Prepare(const BundleSource& source,
                                                   const ExportOptions& options);
  StatusOr<ExportResult> Write(std::shared_ptr<Bundle> out, const BundleSource& source,
                               const ExportOptions& options, std::shared_ptr<const Bundle> base);
  friend StatusOr<ExportResult> PublishBundle(const BundleSource&, const ExportOptions&,
                                              std::shared_ptr<const Bundle>);

  std::string root_, what_;
  std::unique_ptr<DirLock> lock_;
};

// One publish into options.output: BundleWriter::Open (after the source's own checks, so a
// refused source creates nothing), Publish, and the lock released. Same atomic publish and
// retention as ExportBundle.
StatusOr<ExportResult> PublishBundle(const BundleSource& source, const ExportOptions& options,
                                     std::shared_ptr<const Bundle> base = nullptr);

// Checks the output (CheckBundleRoot, before anything is read: an output on a kernel pseudo file
// system such as /proc or /sys is refused before the checkpoint is opened or anything is
// created), reads the whole checkpoint (CheckpointReader) into memory, builds the model from its
// config to check that the dense tensors fit it, and publishes a new bundle version holding the
// root's lock (PublishBundle). A checkpoint root may belong to a job still training, whose
// retention (checkpoint.keep_last) can remove the checkpoint being read: the root is then opened
// again and its newest checkpoint read anew (OpenAndReadCheckpoint, worker/checkpoint.h: up to
// 5 times, warning each time; nothing is written before everything is read); one ckpt-<step>
// directory removed while read is NOT_FOUND "DIR: checkpoint removed while being read ...".
// Errors: the reader's (naming the file); FAILED_PRECONDITION for an output that is not a bundle
// root (CheckBundleRoot's), held by another writer or of another model type, and for a sequence
// model's checkpoint; INVALID_ARGUMENT for a config that does not build a CTR model, a min_count
// that keeps no row of a table, or a dataset of another vocabulary than the checkpoint's (naming
// both, as `ips eval` does); INTERNAL on I/O errors. A refused export writes nothing (a missing
// output is not created).
StatusOr<ExportResult> ExportBundle(const ExportOptions& options);

// One loaded bundle version: the config, the dense tensors and a read-only row map per table.
class Bundle {
 public:
  // `path`: a bundle root (follows CURRENT) or one v-<n> directory. Verifies every file's size and
  // CRC32C against the manifest before reading it. Errors name the file.
  static StatusOr<std::shared_ptr<const Bundle>> Load(const std::string& path);

  int64_t version() const { return version_; }
  int64_t source_step() const { return source_step_; }
  bool fp16() const { return fp16_; }
  const std::string& dir() const { return dir_; }
  const std::string& config_text() const { return config_text_; }
  const std::map<std::string, std::vector<float>>& tensors() const { return tensors_; }
  int64_t dim(const std::string& table) const;
  // Row of key in table, or nullptr (unknown table or key).
  const float* Row(const std::string& table, uint64_t key) const;
  // rows[i] = Row(table, keys[i]) for i < n, the lookups' and rows' cache misses overlapped
  // (every slot prefetched, then every row): a request's rows in a table far larger than the
  // caches cost about one memory latency, not one per key.
  void Rows(const std::string& table, const uint64_t* keys, int64_t n, const float** rows) const;
  int64_t rows(const std::string& table) const;
  // Every key of a table (retrieval scans them).
  const std::vector<uint64_t>& keys(const std::string& table) const;
  // The item -> category map (nullptr: the bundle has none) and one lookup (0 = unknown item).
  const std::shared_ptr<const std::vector<uint32_t>>& item_cats() const { return item_cats_; }
  uint64_t ItemCategory(uint64_t item) const {
    return item_cats_ != nullptr && item < item_cats_->size() ? (*item_cats_)[item] : 0;
  }

 private:
  friend class BundleWriter;
  Bundle() = default;
  struct Table {
    int64_t dim = 0;
    std::vector<uint64_t> keys;
    std::vector<float> values;  // [rows x dim]
    // key -> row while a table is built (Load, PublishBundle); Freeze() moves it into `slots`.
    std::unordered_map<uint64_t, uint32_t> index;
    // The served index: open addressing, linear probing from Mix64(key) & mask, >= 2 slots per
    // row: one cache miss per lookup where the node-based map takes three.
    struct Slot {
      uint64_t key = 0;
      uint32_t row_plus1 = 0;  // 0: empty
    };
    std::vector<Slot> slots;
    uint64_t mask = 0;
    void Freeze();  // slots from keys (every key live, row = position); releases `index`
    void Thaw();    // `index` from keys again (a delta is applied to a frozen base)
    const Slot* Probe(uint64_t key) const;  // the key's slot, or nullptr
    const float* Find(uint64_t key) const {
      const Slot* s = Probe(key);
      return s == nullptr ? nullptr : values.data() + (s->row_plus1 - 1) * static_cast<size_t>(dim);
    }
  };
  std::string dir_;
  int64_t version_ = 0, source_step_ = 0;
  bool fp16_ = false;
  std::string config_text_;
  std::map<std::string, std::vector<float>> tensors_;
  std::map<std::string, Table> tables_;
  std::shared_ptr<const std::vector<uint32_t>> item_cats_;
};

// The newest version number under a bundle root (from CURRENT), or NOT_FOUND.
StatusOr<int64_t> CurrentBundleVersion(const std::string& root);

struct ScoreRequest {
  // Item ids, oldest first. Only the newest max_len (the config's data.max_history) are scored,
  // as training's histories are the newest max_history events before the target (worker/
  // data_reader.h); ScoreResponse::history_dropped counts the others.
  std::vector<uint64_t> history;
  // Same length, or empty: the categories come from the bundle's item -> category map (a bundle
  // without one refuses a request that omits them).
  std::vector<uint64_t> history_cats;
  std::vector<uint64_t> candidates;      // item ids to score; empty = retrieval (top_n)
  std::vector<uint64_t> candidate_cats;  // same length, or empty (as history_cats)
  // Retrieval (no candidates): how many items to return (kDefaultTopN when not given, < 0).
  // With candidates, when given (>= 0): rank them, answering the top_n candidates best first in
  // ScoreResponse::items (a re-ranking request; `scores` still holds every candidate's logit).
  int top_n = -1;
  static constexpr int kDefaultTopN = 10;
};

struct ScoreResponse {
  std::vector<float> scores;  // one logit per candidate (CTR models), in request order
  // Retrieval: the top_n items of the bundle, best first. Candidates with top_n: the top_n
  // candidates by logit, best first (ties in request order; a candidate given twice is ranked
  // twice). item_scores: their scores.
  std::vector<uint64_t> items;
  std::vector<float> item_scores;
  // History entries scored (the newest max_len) and dropped (the oldest beyond max_len).
  int64_t history_used = 0;
  int64_t history_dropped = 0;
  // Ids the request gave that the bundle has no row for, among those scored (the used history
  // entries and every candidate; item ids, and the category ids the request carried, not those
  // the bundle's map filled in): they scored as zero rows, as the store's Lookup reads a key it
  // never saw. Typically ids the model does not know (raw ids sent to a bundle of a dataset's
  // dense ids), or rows --min_count dropped. 0 (padding) is not counted.
  int64_t unknown_ids = 0;
  // The first of them, in the order history entry (item, then its category), then candidate
  // (item, then category): its field ("history", "history_cats", "candidates",
  // "candidate_cats"; nullptr when unknown_ids == 0), its entry in that field, and the id.
  const char* first_unknown_field = nullptr;
  int64_t first_unknown_entry = -1;
  uint64_t first_unknown_id = 0;
};

// Scores requests with one bundle's model. Not thread-safe (the model's buffers).
class Scorer {
 public:
  // Builds the model of the bundle's config (CreateCtrModel with max_batch rows per forward) and
  // loads its dense tensors (INVALID_ARGUMENT naming a missing or mis-sized tensor). With
  // fast_path, a DIN model that models/din_serving.h covers scores candidates through it (the
  // history's share of the attention computed once per request, not once per candidate; same
  // logits as the Forward within float rounding) on a CPU with AVX-512; every other model, DIN
  // configurations it does not cover and CPUs without AVX-512 use the generic Forward.
  static StatusOr<std::unique_ptr<Scorer>> Create(std::shared_ptr<const Bundle> bundle,
                                                  int64_t max_batch = 128, bool fast_path = true);
  // Logits of every candidate (inference-mode Forward, in chunks of max_batch; with top_n >= 0
  // also the top_n of them, ranked) or, without candidates and for models with user vectors, the
  // top_n items of the bundle's item table by max over user vectors of <vector, item vector>, the
  // item vector being the item row, plus its category's row for MIND with use_categories (which
  // needs the bundle's item -> category map: FAILED_PRECONDITION without one). A history longer
  // than the model's max_len is scored by its newest max_len entries (history_dropped says how
  // many were not); ids without a row score as zeros and are counted (unknown_ids).
  // INVALID_ARGUMENT for inconsistent lengths, or omitted categories on a bundle without a map. Ids
  // 0 (padding) read as zero rows here; the JSON requests refuse them.
  Status Score(const ScoreRequest& request, ScoreResponse* response);
  const Bundle& bundle() const { return *bundle_; }
  models::CtrModel<float>& model() { return *model_; }
  // Which path scores candidates: "din_serving/avx512" or "forward".
  std::string scoring_path() const;

 private:
  Scorer() = default;
  std::shared_ptr<const Bundle> bundle_;
  std::unique_ptr<models::CtrModel<float>> model_;
  kernels::Context ctx_;
  std::string item_table_ = "item", cat_table_ = "category";
  bool retrieval_uses_categories_ = false;        // MIND with use_categories
  std::unique_ptr<models::DinServing> din_fast_;  // nullptr: the generic Forward
  // Per-request buffers (reused: after the first requests of a size, scoring allocates nothing).
  std::vector<float> hist_behaviours_, cand_behaviours_;  // [T x 2D], [n x 2D] for din_fast_
  // Their item then category keys, and rows (nullptr: zeros), [2 x (T + n)].
  std::vector<uint64_t> behaviour_keys_;
  std::vector<const float*> behaviour_rows_;
  std::vector<float> item_rows_, cat_rows_;
  std::vector<int64_t> item_index_, cat_index_;
  std::vector<int32_t> lengths_;
  std::vector<uint32_t> rank_order_;  // candidate positions, for top_n of the candidates
};

// A scorer that follows a bundle root: a watcher thread checks CURRENT every poll_ms (a timed
// wait on a condition variable, not a busy loop), loads a newer version off the serving thread
// and hands it over; the serving thread swaps to it at the start of its next request, so no
// request is dropped or served half by each version.
class BundleServer {
 public:
  static StatusOr<std::unique_ptr<BundleServer>> Create(const std::string& root, int poll_ms,
                                                        int64_t max_batch = 128);
  ~BundleServer();  // stops the watcher

  // The scorer to use for the next request (swapping in a loaded newer version first).
  Scorer* Acquire();
  int64_t version();
  int64_t reloads() const { return reloads_; }
  // Requests answered whose history was longer than the model reads (history_dropped > 0).
  int64_t truncated_histories() const { return truncated_histories_; }
  // Ids without a row in the bundle over the requests answered (ScoreResponse::unknown_ids), and
  // the requests answered that had any.
  int64_t unknown_ids() const { return unknown_ids_; }
  int64_t requests_with_unknown_ids() const { return requests_with_unknown_ids_; }
  // The last request's response (its history_used/history_dropped, its unknown ids for a note).
  // Serving thread.
  const ScoreResponse& last_response() const { return response_; }
  // Errors of failed reload attempts (the old version keeps serving), for logging.
  std::vector<std::string> TakeReloadErrors();

  // One request line (JSON) -> one response line (JSON, no newline). Never fails: a bad line
  // answers {"line":N,"error":"..."}; *ok tells which. Id 0 in "history", "candidates",
  // "history_cats" or "candidate_cats" is such an error, naming the field and the entry (0 is the
  // padding id: item and category ids are >= 1). Answers: {"user":..,"version":V,"scores":[..]}
  // (one logit per candidate), or {"user":..,"version":V,"items":[..],"scores":[..]} for
  // retrieval and for candidates with "top_n" (the top_n of them, best first); either ends with
  // ,"unknown_ids":N when N of the ids scored have no row in the bundle (ScoreResponse::
  // unknown_ids: they scored as zero rows), then ,"history_dropped":N when the history was longer
  // than the model reads (its oldest N entries were not scored). Serving thread only.
  std::string HandleLine(int64_t line_no, const std::string& line, bool* ok);
  // The same into *out (replaced): a loop that reuses `out` allocates nothing per request once
  // the buffers have grown to its largest request (no allocator or page-fault share in the p99).
  void HandleLine(int64_t line_no, const std::string& line, bool* ok, std::string* out);

 private:
  BundleServer() = default;
  void Watch();

  std::string root_;
  int poll_ms_ = 500;
  int64_t max_batch_ = 128;
  std::unique_ptr<Scorer> current_;  // serving thread only
  // HandleLine's per-request buffers, reused (serving thread only).
  ScoreRequest request_;
  ScoreResponse response_;
  std::string user_;
  int64_t reloads_ = 0;
  int64_t truncated_histories_ = 0;
  int64_t unknown_ids_ = 0, requests_with_unknown_ids_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                // GUARDED_BY(mu_)
  std::unique_ptr<Scorer> pending_;  // GUARDED_BY(mu_)
  int64_t loaded_version_ = 0;       // GUARDED_BY(mu_): newest version loaded or pending
  std::vector<std::string> errors_;  // GUARDED_BY(mu_)
  std::thread watcher_;
};

}  // namespace ips

#endif  // IPS_WORKER_SERVING_H_
