// Training checkpoints: the directory layout, the manifest and the atomic publish. A checkpoint
// is a directory DIR/ckpt-<step> holding
//   MANIFEST     proto/checkpoint.proto CheckpointManifest (framed with a CRC32C trailer): the
//                step, full or incremental (+ parent), the config text, and every file with its
//                size, CRC32C, role, writer rank and table
//   dense.bin    named float tensors (dense weights, dense optimizer state, model state such as
//                Dice running statistics) and named opaque blobs (reader positions, RNG states,
//                step counters), see CheckpointContent
//   table-<name>-r<rank>.bin   one table shard per writer (ps/table_checkpoint.h)
// and DIR/LATEST names the newest one. Readers take LATEST as a hint: --resume DIR continues the
// newest ckpt-<step> that validates (CheckpointReader::Open), which a writer killed after
// publishing a checkpoint but before replacing LATEST leaves newer than what LATEST names.
//
// Durability: a checkpoint is written into DIR/tmp-<step>-..., every file is fsynced, then the
// directory, then it is renamed to DIR/ckpt-<step> and DIR is fsynced, then LATEST is replaced
// atomically (write + fsync + rename). A writer killed at any point leaves the previous
// checkpoint loadable and no partially visible one (a leftover tmp-* is removed by the next
// writer). The last keep_last checkpoints are kept, plus the ancestors their incremental chains
// need; the others are renamed away (DIR/trash-*) before their files are deleted, newest first,
// so that a reader of a running job's DIR sees each checkpoint whole or gone (CheckpointReader).
//
// Reading validates everything before loading anything: the manifests of the whole chain, then
// every file's existence, size and CRC32C, then the structure of every table file and that every
// tensor and table fits its destination. A corrupt, truncated or missing file fails with a
// message naming the file and what was wrong, and nothing is modified.
//
// Thread safety: a writer or reader is used by one thread; the tables' own locking applies while
// they are written (call between training steps for an exact snapshot). One writer per DIR: the
// writer holds an advisory lock (flock) on DIR/LOCK for its lifetime (DirLock, which serving
// bundle roots use too), so a second run pointed at
// the same DIR fails instead of interleaving checkpoints and deleting the first run's staging
// directories; a later run into a DIR still holding an earlier run's checkpoints is refused by
// CheckCheckpointDirForRun (the launchers call it once they hold the lock). In a multi-process run
// only the coordinator (the process that publishes manifests and LATEST) has a writer; the
// parameter servers write their table files into its staging directory without the lock.
#ifndef IPS_WORKER_CHECKPOINT_H_
#define IPS_WORKER_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "models/layers.h"
#include "ps/checkpoint_io.h"
#include "ps/dynamic_table.h"
#include "ps/table_checkpoint.h"
#include "worker/dense_optimizer.h"
#include "worker/synthetic_batches.h"

namespace ips {

struct Manifest;  // worker/manifest.h
namespace config {
class Config;  // proto/config.pb.h
}  // namespace config

// A float tensor referenced in place (not owned): read when saving, overwritten when restoring.
struct TensorRef {
  std::string name;
  float* data = nullptr;
  int64_t size = 0;
};

// The vocabulary of a converted dataset (data.train_dir), as a checkpoint records it: `ips data
// convert` numbers items, users and categories densely per dataset (worker/dataset_builder.cc), so
// a table row means an item only under the vocabulary that numbered it. Two datasets have the same
// vocabulary when their vocab.ips files (CRC32C and size, from the manifest) and their user, item
// and category counts agree: a dataset converted again from the same input with other evaluation
// lists (--eval_negatives, --eval_users, --seed) has the same one. train_dir and format only name
// it in messages.
//
// It also carries the dataset's layout, which SameAs ignores (a vocabulary is the same whatever
// the shards): with data.seed, data.shuffle and data.batch_size it fixes the order of a training
// epoch, so a run resumed mid-epoch must find it unchanged (CheckResumeEpochOrder). A training
// epoch is a permutation of every shard's rows taken shard after shard (users go to shard
// Mix64(user) % N), with sampled negatives drawn per (shard, row): another --shards count, or
// another --protocol, puts other examples at the same position.
struct DatasetVocabulary {
  std::string train_dir;
  std::string format;
  uint32_t crc32c = 0;
  uint64_t bytes = 0;
  uint64_t users = 0, items = 0, categories = 0;
  // Layout: the manifest's protocol and each shard's training rows, in shard order. Empty
  // shard_rows: not recorded (a checkpoint written before the layout was recorded).
  std::string protocol;
  std::vector<uint64_t> shard_rows;

  bool SameAs(const DatasetVocabulary& o) const {
    return crc32c == o.crc32c && bytes == o.bytes && users == o.users && items == o.items &&
           categories == o.categories;
  }
  // "data.train_dir 'DIR' (movielens100k: 943 users, 1682 items, 19 categories, vocab.ips
  // crc32c 0x1234abcd, 40960 bytes)"; `field` names where DIR came from (`ips export --dataset`).
  std::string Describe(const std::string& field = "data.train_dir") const;
  bool SameLayoutAs(const DatasetVocabulary& o) const {
    return protocol == o.protocol && shard_rows == o.shard_rows;
  }
  // "2 shards of 19381 + 19381 training rows, protocol seqrec".
  std::string DescribeLayout() const;
};
// The vocabulary and layout of the dataset in `train_dir`, from its manifest.
DatasetVocabulary VocabularyOf(const std::string& train_dir, const Manifest& manifest);

// What a checkpoint holds, as references into the live training state.
struct CheckpointContent {
  std::vector<TensorRef> tensors;
  // Opaque named state (reader positions, RNG states, step counters, ...).
  std::map<std::string, std::string> blobs;
  // Tables, identified by options().name; not owned.
  std::vector<ps::DynamicTable*> tables;
  // The training config in text format (saved; on restore, it explains a checkpoint that does
  // not fit in terms of the two configs).
  std::string config_text;
  // The dataset's vocabulary (a run on data.train_dir): saved as the blob kVocabularyBlob; on
  // restore, a checkpoint recording another vocabulary is refused before anything is loaded
  // (CheckCheckpointVocabulary). Unset (synthetic data): nothing saved or checked.
  std::optional<DatasetVocabulary> vocabulary;
  // Set (>= 0) only by a run that continues the checkpoint it restores (`ips train --resume` on
  // data.train_dir, the workers of `mpirun ... ips train --resume`), not by `ips eval`: the
  // examples (sequences, for the sequence models) of one training epoch of this run
  // (TrainingRowsPerEpoch). With `vocabulary` set, Restore then refuses, before anything is
  // loaded, a checkpoint saved mid-epoch whose position would stand for other examples under this
  // run's data.seed, data.shuffle, data.batch_size or dataset layout (CheckResumeEpochOrder).
  int64_t resume_examples_per_epoch = -1;
  // Set only by a run that continues the checkpoint it restores (`ips train --resume`, the workers
  // of `mpirun ... ips train --resume`): called by Restore with the checkpoint's directory and
  // dense blobs once its other checks passed and before anything is loaded, so that a checkpoint
  // the run cannot continue is refused before its tables load. Its error is Restore's. The
  // launchers pass CheckResumeFitsRun.
  std::function<Status(const std::string& checkpoint,
                       const std::map<std::string, std::string>& blobs)>
      check_resume;
};

// Adds a model's dense weights ("dense/<entry>"), its non-trained state ("model_state/<name>")
// and, when `optimizer` is not null, the optimizer's two state arrays sliced like the weights
// ("dense_opt0/<entry>", "dense_opt1/<entry>"). The references stay valid as long as the model
// and the optimizer do.
void AddDenseState(models::DenseParams<float>* params,
                   const std::vector<models::StateTensor<float>>& state, DenseOptimizer* optimizer,
                   CheckpointContent* content);
template <typename Model>  // models::CtrModel<float> or models::SeqModel<float>
void AddModelState(Model* model, DenseOptimizer* optimizer, CheckpointContent* content) {
  AddDenseState(&model->params(), model->state(), optimizer, content);
}

// The dense blob that records a run's DatasetVocabulary in each of its checkpoints (text lines
// key=value; a checkpoint without it, written before it existed or by a synthetic-data run, is
// accepted by every check).
constexpr char kVocabularyBlob[] = "data/vocabulary";
std::string EncodeVocabulary(const DatasetVocabulary& v);
// DATA_LOSS naming the blob when a field is missing or malformed.
StatusOr<DatasetVocabulary> DecodeVocabulary(const std::string& blob);

// The vocabulary the checkpoint at `checkpoint` (its directory, for messages), whose dense blobs
// are `blobs`, was trained on, when it is another than `data`'s; nullopt when they are the same or
// the checkpoint records none (older checkpoints, synthetic-data runs). DATA_LOSS naming the
// checkpoint for a malformed record. The one comparison behind CheckCheckpointVocabulary and
// `ips export`'s check of its dataset (worker/serving.cc), which word the refusal each for its
// command.
StatusOr<std::optional<DatasetVocabulary>> RecordedOtherVocabulary(
    const std::string& checkpoint, const std::map<std::string, std::string>& blobs,
    const DatasetVocabulary& data);

// Refuses to resume or evaluate the checkpoint at `checkpoint` (its directory, for the message),
// whose dense blobs are `blobs`, on a dataset of another vocabulary than the one it was trained
// on: INVALID_ARGUMENT naming both (the recorded path and counts, and `data`'s). OK when the
// checkpoint records no vocabulary (older checkpoints, synthetic-data runs); DATA_LOSS for a
// malformed record.
Status CheckCheckpointVocabulary(const std::string& checkpoint,
                                 const std::map<std::string, std::string>& blobs,
                                 const DatasetVocabulary& data);

// Whether a dataset run may continue the checkpoint at `checkpoint` (its directory, for messages)
// where it stopped. The checkpoint's position in its epoch (blob "run/dataset": epoch, position)
// counts examples of that epoch's order, which data.seed and data.shuffle (the permutation and
// the sampled negatives), data.batch_size (how the rest is cut into steps) and the dataset's
// layout (DatasetVocabulary::SameLayoutAs) decide. Mid-epoch (0 < position <
// examples_per_epoch) a change of any of them would continue the epoch with other examples or
// other batches than the run that wrote the checkpoint: INVALID_ARGUMENT naming each changed
// field with both values and how to continue ("To continue that run, set data.batch_size back to
// 32; or train from scratch"). At an epoch's start or end the position means the same under any
// of them (the next epoch is drawn afresh), so a change is accepted with a warning that the run
// will not repeat the uninterrupted one. `recorded_config` is the checkpoint's config text
// (CheckpointReader::config_text, CheckpointHead::config_text), `config_text` this run's;
// `examples_per_epoch` is this run's TrainingRowsPerEpoch. Settings that are not recorded (no
// config text, or a config without a data section; no layout in older checkpoints; no
// "run/dataset": synthetic data) are not compared. Under mpirun an epoch leaves up to W-1
// batches unread, so its last checkpoint is mid-epoch here. DATA_LOSS for a malformed vocabulary
// record.
Status CheckResumeEpochOrder(const std::string& checkpoint, const std::string& recorded_config,
                             const std::map<std::string, std::string>& blobs,
                             const std::string& config_text, const DatasetVocabulary& data,
                             int64_t examples_per_epoch);

// Whether the checkpoint at `checkpoint` (its directory, for the message), whose dense blobs are
// `blobs`, lies within the run `cfg` configures, so that the run can continue it: a dataset run's
// epoch (blob "run/dataset") below train.epochs, a synthetic run's step (blob
// "run/synthetic_step", warm-up included) within data.synthetic.warmup_steps +
// data.synthetic.steps (the latter capped by train.max_steps). The checkpoint is intact and the
// config ends before it, so this is FAILED_PRECONDITION naming the checkpoint and the values to
// set ("the checkpoint at DIR/ckpt-64 was saved in epoch 2, beyond this run's train.epochs 1: set
// train.epochs to at least 2 to continue it (--set train.epochs=2)"), not the DATA_LOSS of a
// position out of range for other reasons (a damaged or foreign checkpoint), which the trainers
// still refuse. A missing or mis-sized blob is OK here: it is left to them too. `ips train
// --resume` (through CheckpointContent::check_resume), its mpirun workers and `ips config check
// --resume` call it.
Status CheckResumeFitsRun(const config::Config& cfg, const std::string& checkpoint,
                          const std::map<std::string, std::string>& blobs);
// CheckResumeFitsRun of the checkpoint `resume` names (a root or one ckpt-<step>, resolved as
// PeekCheckpoint does; only its manifest and dense blobs are read), its error prefixed with
// "--resume RESUME". OK when the checkpoint cannot be read: the restore that follows says why.
// Every rank of `mpirun ... ips train --resume` checks it before anything loads.
Status CheckResumePathFitsRun(const config::Config& cfg, const std::string& resume);

// The checkpoint root of `path`: its parent when it names one ckpt-<step> directory (holding a
// MANIFEST), else `path` itself (trailing slashes trimmed).
std::string CheckpointRootOf(const std::string& path);

// How to continue a run that saves into checkpoint.dir `dir`: "--resume DIR", plus " --set
// checkpoint.dir=DIR" unless the config file itself (config_file_text: the text of --config;
// "" when unknown) sets checkpoint.dir to DIR. A resumed run saves only where its own config
// says (a --set of the stopped run is not remembered), so the advice names it.
std::string ContinueAdvice(const std::string& dir, const std::string& config_file_text);

// The blob in which every checkpoint of a synthetic run, single-process or under mpirun, records
// its batch schedule (SyntheticSchedule, worker/synthetic_batches.h): (first step, workers) int64
// pairs, one per part.
constexpr char kSyntheticScheduleBlob[] = "run/synthetic_schedule";
std::string EncodeSyntheticSchedule(const SyntheticSchedule& schedule);
// The schedule of the synthetic run that wrote the checkpoint at `checkpoint` (its directory,
// for messages) at trainer step `step`, from its dense blobs: kSyntheticScheduleBlob, or for a
// checkpoint written before it existed the workers of its "cluster/layout" blob (a cluster run)
// from step 0, or one worker (a single-process run). DATA_LOSS naming the checkpoint and the blob
// when it is malformed or has a part starting after `step`.
StatusOr<SyntheticSchedule> SyntheticScheduleOf(const std::string& checkpoint,
                                                const std::map<std::string, std::string>& blobs,
                                                int64_t step);

// One writer per directory (a checkpoint.dir, a serving bundle root): an advisory lock (flock) on
// DIR/LOCK, taken without waiting, with the holder's pid written into the file for the message of
// the writer it refuses. The lock is released when the DirLock is destroyed or the process exits
// (a kill included: the kernel drops it); the file itself is never removed (removing a lock file
// races with a process that has just opened it). Readers (`ips serve`, `ips eval`) take no lock.
// Where the file system has no flock (NFS without lockd, some FUSE mounts) the writer goes on
// unlocked, with a warning.
struct DirLockLabel {
  // How messages name DIR: "checkpoint.dir", "--output", "--stream_publish_dir".
  std::string what;
  // What the refused writer should do, after "is in use by another run (pid N): ".
  std::string remedy;
};
class DirLock {
 public:
  // Takes DIR/LOCK exclusively (DIR must exist). FAILED_PRECONDITION "<what> DIR is in use by
  // another run (pid N): <remedy> (lock: DIR/LOCK)" when another writer, in this or another
  // process, holds it; INTERNAL naming DIR/LOCK when it cannot be opened or locked.
  static StatusOr<std::unique_ptr<DirLock>> Acquire(const std::string& dir,
                                                    const DirLockLabel& label);
  // Acquire's check without keeping the lock (a shared lock for the probe, released before
  // returning; nothing is created or written): Acquire's FAILED_PRECONDITION when a writer holds
  // DIR/LOCK; OK when DIR or DIR/LOCK does not exist or the file system has no flock; INTERNAL
  // naming DIR/LOCK when it cannot be opened for writing (as Acquire fails).
  static Status CheckNotLocked(const std::string& dir, const DirLockLabel& label);
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_ = -1;  // DIR/LOCK, flock'ed exclusively; -1 where the file system has no locks
};

struct CheckpointOptions {
  std::string dir;
  int keep_last = 3;  // >= 1
  // Table files hold only the rows changed since this writer's previous checkpoint; every
  // full_every-th checkpoint (and the first one) is full, which bounds the chains.
  bool incremental = false;
  int full_every = 10;
  // Tests: called with "file:<name>" after each file is written and with "publish" before the
  // rename; an error stops the write there without any cleanup, as a killed process would.
  std::function<Status(const std::string& event)> fault_hook;
};

struct CheckpointInfo {
  std::string path;  // DIR/ckpt-<step>
  int64_t step = 0;
  bool incremental = false;
  std::string parent;  // incremental: the directory name of the parent
  int64_t bytes = 0;   // all files
  int files = 0;
  int64_t table_rows = 0;  // rows written (changed rows for an incremental checkpoint)
  double seconds = 0;
};

// One file of a checkpoint as the manifest records it.
struct CheckpointFile {
  std::string name;  // relative to the checkpoint directory
  int64_t bytes = 0;
  uint32_t crc32c = 0;
  enum Role { kDense, kTable } role = kTable;
  int rank = 0;       // writer rank (parameter server)
  std::string table;  // kTable
  int64_t rows = 0;
  uint32_t epoch = 0;  // kTable: pass as since_epochs[table] to the next incremental write
};

// A parameter server's (or any table owner's) part of a checkpoint: writes each table as
// table-<name>-r<rank>.bin into `staging_dir` (the coordinator's CheckpointWriter::Begin) and
// returns the entries for its Commit. since_epochs == nullptr: full files; otherwise incremental
// files relative to the given per-table epochs (the `epoch`s of this rank's files in the previous
// committed checkpoint). After the coordinator's Commit succeeds, the owner calls
// table->DiscardChangesThrough(file.epoch) for each file. Errors: INTERNAL naming the file,
// INVALID_ARGUMENT for duplicate tables or a table missing from since_epochs.
StatusOr<std::vector<CheckpointFile>> WriteTableShards(
    const std::string& staging_dir, int rank, const std::vector<ps::DynamicTable*>& tables,
    const std::map<std::string, uint32_t>* since_epochs,
    const std::function<Status(const std::string& event)>& fault_hook = nullptr);

// The manifest entry of a shard file written by ps::WriteTableShardFiles (a parameter server's
// part of a multi-process checkpoint, ps/server.h kPsCheckpoint).
CheckpointFile CheckpointFileOf(const ps::TableShardFile& shard);

class CheckpointWriter {
 public:
  // Runs CheckDir, creates DIR when missing, takes the lock DIR/LOCK (non-blocking; released when
  // the writer is destroyed or the process exits, a kill included) and then removes stale tmp-*
  // directories of a killed writer. INVALID_ARGUMENT for bad options; CheckDir's errors;
  // FAILED_PRECONDITION "checkpoint.dir DIR is in use by another run (pid N)" when another
  // writer, in this or another process, holds the lock; INTERNAL naming the path on I/O errors.
  static StatusOr<std::unique_ptr<CheckpointWriter>> Create(const CheckpointOptions& options);
  // The checks of Create that write nothing (`ips config check` runs them, so it refuses what
  // `ips train` would at start-up): FAILED_PRECONDITION "checkpoint.dir DIR ..." when DIR exists
  // and is not a directory, when its nearest existing ancestor is not a directory or not writable
  // (DIR cannot be created), or when DIR is a directory this process cannot write (Create writes
  // DIR/LOCK); INVALID_ARGUMENT for an empty DIR. DIR on (or to be created in a directory on) a
  // kernel pseudo file system such as /proc, /sys or a cgroup mount is refused first
  // (ps::CheckNotOnPseudoFileSystem): root passes the permission test there, and creating DIR
  // would fail or make a kernel object (a cgroup) of it.
  static Status CheckDir(const std::string& dir);
  // Create's lock check without keeping the lock (`ips config check` runs it after CheckDir):
  // FAILED_PRECONDITION with Create's "checkpoint.dir DIR is in use by another run (pid N)" when
  // a writer, in this or another process, holds DIR/LOCK. The lock is taken shared for the probe
  // and released before returning; nothing is created or written. OK when DIR or DIR/LOCK does
  // not exist or the file system has no flock; INTERNAL naming DIR/LOCK when it cannot be opened
  // for writing (as Create fails).
  static Status CheckNotLocked(const std::string& dir);
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Writes and publishes checkpoint `step` of `content` (replacing an existing ckpt-<step>), then
  // deletes checkpoints beyond keep_last (the newest by step, plus the chains they need; the one
  // just written and its chain are always kept, even when DIR holds higher steps). Errors: INTERNAL
  // naming the file on I/O errors (the previous checkpoint stays the latest), INVALID_ARGUMENT for
  // duplicate tensor or table names.
  StatusOr<CheckpointInfo> Write(int64_t step, const CheckpointContent& content);

  // Multi-process checkpoints (one coordinator, e.g. the first worker; table files from every
  // parameter-server rank on a shared file system):
  //   1. coordinator: staging = Begin(step); incremental = NextIsIncremental(); tell the servers
  //   2. every server: WriteTableShards(staging, rank, its tables, incremental ? &its epochs : 0)
  //   3. coordinator: Commit(step, staging, dense content (its tables ignored), all servers' files)
  //   4. servers, once Commit succeeded: DiscardChangesThrough + remember the epochs
  // Write() is exactly these steps in one process (rank 0).
  bool NextIsIncremental() const;
  StatusOr<std::string> Begin(int64_t step);
  // Writes dense.bin and the manifest into `staging` and publishes it (see Write). The table
  // files must already be in `staging` with the entries given.
  StatusOr<CheckpointInfo> Commit(int64_t step, const std::string& staging,
                                  const CheckpointContent& content,
                                  const std::vector<CheckpointFile>& table_files);

  const CheckpointOptions& options() const { return o_; }

 private:
  CheckpointWriter(const CheckpointOptions& o, std::unique_ptr<DirLock> lock)
      : o_(o), lock_(std::move(lock)) {}
  void Retain();
  Status FireHook(const std::string& event);

  CheckpointOptions o_;
  std::unique_ptr<DirLock> lock_;  // DIR/LOCK, held for the writer's lifetime
  int64_t counter_ = 0;
  // Incremental bookkeeping: the last committed checkpoint of this writer and each table's epoch
  // in it; empty until the first commit (so the first checkpoint after a resume is full).
  std::string last_committed_;
  std::map<std::string, uint32_t> table_epochs_;
  int since_full_ = 0;
  bool hook_stopped_ = false;  // the fault hook stopped the current write
};

class CheckpointReader {
 public:
  // `path` is one ckpt-<step> directory (a directory holding a MANIFEST) or a checkpoint root,
  // which resolves to its newest ckpt-<step> that validates. A ckpt-<step> only ever appears,
  // by rename, once complete, so it is a valid checkpoint whatever LATEST says: LATEST is a
  // hint (a writer killed between publishing ckpt-<step> and replacing LATEST leaves it naming
  // the previous one, or a missing one when it was replacing a checkpoint of the same step).
  // When `warn`, the resolution says so whenever it is not silent agreement: LATEST naming
  // another checkpoint than the one used (an older one, or a missing one: both are named), and
  // every newer ckpt-<step> skipped because it does not validate (named with its error).
  // Validates the whole chain (every manifest, every file's size and CRC32C, every table file's
  // structure) before returning. Errors: NOT_FOUND (no checkpoint, a missing file: named),
  // DATA_LOSS (corrupt or truncated file: named, with what was wrong), INVALID_ARGUMENT (a broken
  // chain or an unknown format version); for a root none of whose checkpoints validates, the
  // newest one's error.
  //
  // A root may belong to a run that is still writing checkpoints, whose retention removes all
  // but its keep_last newest, possibly the one being read (`ips eval` or `ips export` on a
  // training job's checkpoint.dir). A checkpoint removed (or replaced) while being read is told
  // apart from a damaged one by its directory: retention renames it away before deleting its
  // files, so it is gone or another directory, while a damaged one is still there. A root then
  // picks its newest checkpoint that validates again, from a fresh listing, up to 5 times
  // (warning each time), before NOT_FOUND "ROOT: the checkpoint picked was removed while being
  // read 5 times in a row ..."; one ckpt-<step> that is removed is NOT_FOUND "DIR: checkpoint
  // removed while being read ...". A damaged checkpoint keeps its error above.
  static StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& path,
                                                          bool warn = true);
  // The checkpoint ROOT/NAME itself (NAME = ckpt-<step>), validated as Open validates it but
  // never resolved as a root: a checkpoint directory without its MANIFEST is NOT_FOUND naming it.
  static StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(const std::string& root,
                                                                    const std::string& name);
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  // Tests only: hook(event, dir) is called where a checkpoint being read can vanish under the
  // reader (a running job's retention removing it), so that a test can remove or replace
  // checkpoints there deterministically: "picked" once the manifests of DIR's chain are read and
  // before its files are (Open, OpenCheckpoint); "opened" by OpenAndReadCheckpoint (so by
  // LoadCheckpoint and `ips export`) between opening DIR and reading its files. nullptr (the
  // default) clears it. Set it while no reader runs.
  static void SetRaceHookForTesting(
      std::function<void(const std::string& event, const std::string& dir)> hook);

  // Whether a directory of the chain has been removed or replaced since it was read (by another
  // process: a running job's retention, or a rewrite of the same step). The files are then gone
  // and every later read of them (Restore, ReadDense, TableFiles' paths) fails.
  bool Removed() const;
  // `error`, of a read of this checkpoint's files after Open (Restore and ReadDense apply it;
  // callers reading TableFiles' paths should too), or, when the checkpoint has been removed
  // since (Removed), NOT_FOUND "DIR: checkpoint removed while being read ..." ending with
  // `error`, so that the removal does not read as a damaged checkpoint.
  Status ExplainReadError(const Status& error) const;

  const std::string& dir() const { return dirs_.back(); }
  int64_t step() const { return step_; }
  bool incremental() const { return dirs_.size() > 1; }
  // The chain, oldest (the full checkpoint) first; one entry for a full checkpoint.
  const std::vector<std::string>& chain() const { return dirs_; }
  const std::string& config_text() const { return config_text_; }
  std::vector<std::string> table_names() const;
  // The files of `table` per chain link (the argument of ps::LoadTableChain).
  std::vector<std::vector<std::string>> TableFiles(const std::string& table) const;

  // Restores `into`: every tensor must exist in the checkpoint with the same size (and, when
  // into.tensors is not empty, every checkpoint tensor must be listed: a checkpoint of another
  // model does not half-load); every table must have files; blobs are returned in *blobs (may be
  // null). Tables are loaded with ps::LoadTableChain (pass fresh tables) keeping the keys where
  // keep(key) (empty: all). Everything is checked before anything is written. Errors name the
  // tensor, table or file. When they do not fit and the checkpoint's recorded config and
  // into.config_text differ in a setting that shapes them, the error is INVALID_ARGUMENT "the
  // checkpoint at DIR was written by a DIEN model (model.embedding_dim 18), the config says DIN
  // (...)" listing the differing settings, then the first misfit; a checkpoint without a config
  // (or into.config_text empty) gets the misfit alone (plus the checkpoint's model when known).
  Status Restore(const CheckpointContent& into, std::map<std::string, std::string>* blobs,
                 const ps::KeyFilter& keep = nullptr) const;
  // The dense tensors and blobs as owned copies (export, inspection).
  Status ReadDense(std::map<std::string, std::vector<float>>* tensors,
                   std::map<std::string, std::string>* blobs) const;

 private:
  CheckpointReader() = default;
  // Open of a root: its newest ckpt-<step> that validates (see Open).
  static StatusOr<std::unique_ptr<CheckpointReader>> OpenRoot(const std::string& root, bool warn);
  // (device, inode) of a directory: what tells a checkpoint removed or replaced under the reader.
  using DirId = std::pair<uint64_t, uint64_t>;
  // OpenCheckpoint's validation, appending each directory of the chain to *read with its identity
  // as it is read (also on errors).
  static StatusOr<std::unique_ptr<CheckpointReader>> ReadChain(
      const std::string& root, const std::string& name,
      std::vector<std::pair<std::string, DirId>>* read);
  // ReadChain, and on an error the directory of the chain removed or replaced while it was being
  // read in *removed ("" when the error is the checkpoint's own). `listed`: ROOT/NAME was seen a
  // moment ago (listed in the root, or holding a MANIFEST), so its absence is a removal too.
  static StatusOr<std::unique_ptr<CheckpointReader>> OpenOne(const std::string& root,
                                                             const std::string& name, bool listed,
                                                             std::string* removed);
  struct FileRef {
    std::string path;
    std::string table;
    int rank = 0;
    int role = 0;
  };
  std::vector<std::string> dirs_;            // chain, oldest first
  std::vector<DirId> dir_ids_;               // per chain link, as read by Open
  std::vector<std::vector<FileRef>> files_;  // per chain link
  std::string config_text_;
  int64_t step_ = 0;
};

// Opens `path` (CheckpointReader::Open: a root or one checkpoint) and reads it with
// read(reader), returning the reader that was read. A root's checkpoint may also be removed (by
// the retention of a run still writing to the root) after Open picked it, while `read` reads its
// files: when `read` fails and the checkpoint has been removed since (Removed), the root is
// opened again and read anew, up to as many times as Open picks (5, warning each time), as long
// as may_retry() says the failed read left nothing behind (null: always). One checkpoint
// directory, a checkpoint still there (a damaged one) or the last attempt returns read's error.
// `read` starts afresh on each call and passes its errors of reading the checkpoint's files
// through ExplainReadError (Restore and ReadDense do), so that a removal reads as one. Used by
// LoadCheckpoint and `ips export` (worker/serving.cc ExportBundle).
StatusOr<std::unique_ptr<CheckpointReader>> OpenAndReadCheckpoint(
    const std::string& path, const std::function<Status(const CheckpointReader&)>& read,
    const std::function<bool()>& may_retry = nullptr);

// The trainer's one-liners. SaveCheckpoint = writer->Write. LoadCheckpoint opens `path` (a root
// or one checkpoint), restores `into` (see CheckpointReader::Restore) and returns the step; a
// root's checkpoint removed while it is restored, with nothing loaded yet, is opened again
// (OpenAndReadCheckpoint).
inline StatusOr<CheckpointInfo> SaveCheckpoint(CheckpointWriter* writer, int64_t step,
                                               const CheckpointContent& content) {
  return writer->Write(step, content);
}
StatusOr<int64_t> LoadCheckpoint(const std::string& path, const CheckpointContent& into,
                                 std::map<std::string, std::string>* blobs,
                                 const ps::KeyFilter& keep = nullptr);

// The dense.bin format (named float tensors + named blobs, CRC32C trailer), shared with the
// serving bundle. Write: INTERNAL naming the path on I/O errors. Read: DATA_LOSS naming the file
// and what is wrong; either output may be null.
StatusOr<ps::FileDigest> WriteDenseFile(const std::string& path,
                                        const std::vector<TensorRef>& tensors,
                                        const std::map<std::string, std::string>& blobs);
Status ReadDenseFile(const std::string& path, std::map<std::string, std::vector<float>>* tensors,
                     std::map<std::string, std::string>* blobs);

// A config's model for messages (CheckpointReader::Restore's misfits, `ips export --delta` onto a
// bundle of another model): "a DIEN model (model.embedding_dim 18)", or "" when `config_text` is
// empty, does not parse or has no model section (a placeholder, not the config that built the
// model). Checkpoints and bundles record the config that wrote them (config_text).
std::string DescribeConfigModel(const std::string& config_text);

// The checkpoint directories under a root, sorted by step (oldest first).
StatusOr<std::vector<std::pair<int64_t, std::string>>> ListCheckpoints(const std::string& root);

// The checkpoint `path` names, resolved as CheckpointReader::Open resolves it (one ckpt-<step>
// directory: its manifest alone is read; a root: its newest ckpt-<step> that validates, which
// reads and checks its files as Open does, without Open's warnings). Errors: Open's for the
// same path.
struct CheckpointHead {
  std::string dir;          // ROOT/ckpt-<step>
  int64_t step = 0;         // the manifest's
  std::string dense_path;   // its dense file (for the blobs: ReadDenseFile)
  std::string config_text;  // the config that wrote it (the manifest's; may be empty)
};
StatusOr<CheckpointHead> PeekCheckpoint(const std::string& path);

// Whether a run may write its checkpoints into `dir` (checkpoint.dir), called once the run's
// writer holds DIR/LOCK (so that "in use by another run" is reported first) by `ips train`, by
// worker 0 of `mpirun ... ips train` and, without the lock, by `ips config check`. Retention keeps
// the keep_last newest checkpoints by step and --resume DIR continues the newest, so a run must
// not share DIR with checkpoints of higher steps than its own:
//   resumed_step < 0 (a fresh run): DIR must hold no ckpt-<step> at all;
//   resumed_step >= 0 (a run resumed from a checkpoint of that step, in DIR or elsewhere): DIR
//   must hold none of a higher step (this run would overwrite or remove them).
// FAILED_PRECONDITION naming DIR, its newest checkpoint and the remedies (--resume DIR, or an
// empty or new checkpoint.dir); OK when DIR does not exist. INTERNAL when DIR cannot be listed.
// --resume DIR continues DIR's newest checkpoint that validates, so a resumed run refused here
// either resumed another checkpoint (then --resume DIR is the remedy) or DIR's newer ones do not
// validate: those are named with their errors, and the remedy is to move them away (never the
// --resume DIR that just resolved to the older one).
Status CheckCheckpointDirForRun(const std::string& dir, int64_t resumed_step);

}  // namespace ips

#endif  // IPS_WORKER_CHECKPOINT_H_
