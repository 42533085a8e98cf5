// Table checkpoint files: one DynamicTable (one parameter server's shard of a table, or the
// trainer's whole table) written to and read from one file. Owns the file format; the manifest
// that lists the files, the temporary directory and the atomic publish are worker/checkpoint.h's.
//
// A file holds everything needed to continue training exactly: every live row's key, value,
// optimizer state and TTL/LFU metadata (last-use step, use count), the table's clock (step, last
// TTL sweep, Adam's step count) and the admission count sketches. An incremental file holds only
// the rows changed since the previous checkpoint's epoch plus the keys removed since then
// (DynamicTable::BeginCheckpoint explains the epochs); applying a full file and then each
// incremental file of a chain in order reproduces the table.
//
// Format (host byte order, see ps/checkpoint_io.h):
//   "IPSTBL01" | u32 version | u32 flags (1 = incremental) | string name | i64 dim |
//   i32 state_count | i32 optimizer type | i64 step | i64 last_sweep_step | i64 optimizer_step |
//   u32 epoch | u32 since_epoch | i64 sketch count S | S x (i64 width, i64 additions,
//   u16[4 x width]) | i64 removed count | u64 keys[removed] |
//   row blocks: i32 n (0 ends) then n x (u64 key, u32 last_step, u32 freq, f32 value[dim],
//   f32 state[state_count x dim]) | i64 total rows | u32 CRC32C of everything before it.
//
// Re-sharding: rows go wherever the loader's `keep(key)` predicate says, so N files written by N
// servers load into M tables under any key partitioning; admission sketches are max-merged
// (CountSketch::MergeMax), which never undercounts a key.
//
// Thread safety: the functions are thread-safe for distinct tables; the table's own locking
// applies (rows changed during a write land in this file or in the next incremental one).
#ifndef IPS_PS_TABLE_CHECKPOINT_H_
#define IPS_PS_TABLE_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "ps/dynamic_table.h"

namespace ips::ps {

struct TableWriteOptions {
  // false: every live row. true: rows changed at an epoch > since_epoch and the keys removed
  // since then (since_epoch = the `epoch` of the previous checkpoint's TableFileInfo).
  bool incremental = false;
  uint32_t since_epoch = 0;
};

// What a write produced: the numbers the manifest records, and the epoch to pass as
// since_epoch to the next incremental write once this checkpoint is committed.
struct TableFileInfo {
  int64_t bytes = 0;
  uint32_t crc32c = 0;  // of the whole file
  int64_t rows = 0;
  int64_t removed = 0;
  uint32_t epoch = 0;
};

// Writes `table` to `path` (created or truncated; fsynced, but the directory is not: the caller
// publishes). Starts a checkpoint epoch on the table (DynamicTable::BeginCheckpoint). Errors:
// INTERNAL naming the path on I/O failures; the partial file is left for the caller to discard.
StatusOr<TableFileInfo> WriteTableFile(DynamicTable* table, const std::string& path,
                                       const TableWriteOptions& options);

// One writer's part of a multi-file checkpoint (a parameter server's shard of every table, or the
// single-process trainer's whole tables): the file of `table` written by `rank` is named
// table-<table>-r<rank>.bin inside the checkpoint directory (worker/checkpoint.h lists the
// files in its manifest).
std::string TableShardFileName(const std::string& table, int rank);

// A written shard file as a manifest records it.
struct TableShardFile {
  std::string name;  // TableShardFileName, relative to the checkpoint directory
  std::string table;
  int rank = 0;
  TableFileInfo info;
};

// Writes each table to dir/TableShardFileName(name, rank). since_epochs == nullptr: full files;
// otherwise incremental files relative to the given per-table epochs (the `epoch`s of this
// writer's files in its previous committed checkpoint). `fault_hook` (tests; may be empty) is
// called with "file:<name>" after each file; its error stops the write there. Errors: INTERNAL
// naming the file, INVALID_ARGUMENT for a null or duplicate table or a table missing from
// since_epochs. Used by worker/checkpoint.h (WriteTableShards) and ps/server.h (kPsCheckpoint),
// so that both write the same files.
StatusOr<std::vector<TableShardFile>> WriteTableShardFiles(
    const std::string& dir, int rank, const std::vector<DynamicTable*>& tables,
    const std::map<std::string, uint32_t>* since_epochs,
    const std::function<Status(const std::string& event)>& fault_hook = nullptr);

// The header of a table file.
struct TableFileHeader {
  std::string name;
  bool incremental = false;
  int64_t dim = 0;
  int state_count = 0;
  int optimizer_type = 0;  // OptimizerOptions::Type as int
  int64_t step = 0, last_sweep_step = 0, optimizer_step = 0;
  uint32_t epoch = 0, since_epoch = 0;
  int64_t sketches = 0;
  int64_t removed = 0;
};

// Reads and checks the whole file (structure and trailer checksum) without touching any table.
// DATA_LOSS naming the file and what is wrong (bad magic, unknown version, truncated at byte N,
// checksum mismatch, row count mismatch); NOT_FOUND when missing.
StatusOr<TableFileHeader> VerifyTableFile(const std::string& path);

// INVALID_ARGUMENT naming the file and field when a file cannot load into `table` (name, dim,
// optimizer state layout differ).
Status CheckTableFileFits(const std::string& path, const TableFileHeader& header,
                          const DynamicTable& table);

using KeyFilter = std::function<bool(uint64_t key)>;

struct TableLoadOptions {
  // Rows (and removals) of keys for which keep(key) is false are skipped; empty = keep all.
  KeyFilter keep;
  // Max-merge the file's admission sketches into the table (the loader of a chain sets it for
  // the newest group of files only).
  bool merge_sketches = true;
};

struct TableLoadStats {
  int64_t rows_read = 0;
  int64_t rows_loaded = 0;
  int64_t removed_applied = 0;
  bool sketches_restored = false;
};

// Applies one file to `table`: erases its removed keys, then restores its rows (creating or
// overwriting), raises the table's clock to the file's (max of step, last sweep, Adam's step)
// and, when asked, merges the sketches (skipped, sketches_restored = false, when the table's
// shard count or sketch width differ). Call VerifyTableFile + CheckTableFileFits on every file
// first: an I/O error midway leaves the table partially loaded. Errors: as VerifyTableFile, and
// the table's RESOURCE_EXHAUSTED.
Status LoadTableFile(const std::string& path, DynamicTable* table, const TableLoadOptions& options,
                     TableLoadStats* stats);

// Loads a chain of checkpoints into a fresh table: groups[0] are the files of the full checkpoint
// (one per writer: N servers), groups[1..] those of each incremental checkpoint in order. Every
// file is verified and checked against the table before any row is loaded, so a corrupt,
// truncated or missing file fails (naming it) with the table untouched. Rows whose keep(key) is
// false are skipped (re-sharding N writers into M tables). Sketches come from the last group.
Status LoadTableChain(const std::vector<std::vector<std::string>>& groups, DynamicTable* table,
                      const KeyFilter& keep, TableLoadStats* stats);

}  // namespace ips::ps

#endif  // IPS_PS_TABLE_CHECKPOINT_H_
