// Manifest: the `MANIFEST` text file of a converted dataset directory — what was converted, with
// which protocol and parameters, the counts (users, items, categories, events, examples, bad and
// filtered records), the history-length histogram, and every data file with its size and CRC32C.
//
// Format: UTF-8 `key=value` lines; the first line is `ips_dataset_manifest <version>`, the last
// is `manifest_crc32c=0x........` over every byte before it, so a hand-edited or truncated
// manifest is rejected (DATA_LOSS) instead of silently mis-describing the shards.
#ifndef IPS_WORKER_MANIFEST_H_
#define IPS_WORKER_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace ips {

constexpr int kManifestVersion = 1;
constexpr char kManifestFile[] = "MANIFEST";

struct ManifestFile {
  std::string file;  // relative to the dataset directory
  uint64_t bytes = 0;
  uint32_t crc = 0;  // CRC32C of the whole file
  // Per-shard counts (zero for the vocabulary file).
  uint64_t users = 0, events = 0, train_examples = 0, eval_examples = 0;
};

struct Manifest {
  std::string format;    // input format (movielens100k, seqrec, taobao, ...)
  std::string protocol;  // seqrec | ctr | given (DIEN: examples given by the input)
  std::string input;     // input path as given
  uint64_t seed = 0;
  int64_t max_history = 50;
  int64_t eval_negatives = 100;
  int64_t eval_users = 10000;  // cap on evaluated users (seqrec/ctr protocols)
  int64_t min_user_events = 1;
  std::string train_negatives;         // uniform | popularity | none (stored labels)
  int64_t negatives_per_positive = 1;  // sampled per stored positive per epoch (0 for given)

  uint64_t input_lines = 0;  // every line of the main input(s)
  uint64_t users = 0, items = 0, categories = 0, events = 0;
  uint64_t train_events = 0;    // events in the training split (peer: 'train interactions')
  uint64_t train_examples = 0;  // stored training rows (positives, or given rows)
  uint64_t train_examples_per_epoch = 0;  // rows a training epoch yields (with sampled negatives)
  uint64_t eval_examples = 0;             // evaluation lists (users) or given eval rows
  uint64_t eval_candidates = 0;           // candidates per evaluation list (1 + eval_negatives)
  uint64_t bad_records = 0;
  std::map<std::string, uint64_t> filtered;  // reason -> lines dropped for it
  std::vector<uint64_t> history_histogram;   // train rows by history length 0..max_history

  ManifestFile vocab;
  std::vector<ManifestFile> shards;

  // Serializes to text (with the trailing CRC line).
  std::string ToText() const;
  // Parses ToText() output. DATA_LOSS (naming `path`) on a CRC mismatch or malformed line,
  // FAILED_PRECONDITION on an unsupported version.
  static StatusOr<Manifest> Parse(const std::string& path, const std::string& text);
  // Writes `dir/MANIFEST` atomically / reads and parses it.
  Status WriteTo(const std::string& dir) const;
  static StatusOr<Manifest> ReadFrom(const std::string& dir);
};

}  // namespace ips

#endif  // IPS_WORKER_MANIFEST_H_
