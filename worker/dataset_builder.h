// Dataset conversion: reads one input format (worker/record_parsers.h) into time-ordered user
// sequences, applies an example-building protocol, and writes a dataset directory of shards
// (worker/columnar_file.h, columns in worker/shard_schema.h), vocab.ips and MANIFEST.
//
// Protocols (identical to ../shared/peers/data.py where the peer defines them):
//   seqrec  Leave-one-out: users with >= 3 events hold out the last (test) and second to last
//           (validation, used only as history at test time); others are train-only. Training
//           positives at each of the last `max_history` positions t >= 1 of the train sequence,
//           each paired per epoch with one uniformly drawn item the user never interacted with
//           (any split). Evaluation: all users with >= 3 events or a seeded random `eval_users`
//           of them; history = last max_history of train+validation; candidates = test item +
//           `eval_negatives` uniform never-interacted items (with replacement). Input where a
//           user that needs negatives (training rows or an evaluation list) interacted with
//           every item, or where no user keeps >= 2 training events, is refused (the peer's
//           sampler would loop forever on the first; the second cannot train).
//   ctr     Same time-ordered leave-one-out split, but every train position t >= 1 is a
//           positive (all behaviours count), and negatives (training per epoch and evaluation)
//           are drawn by training popularity (item frequency among train events), never an item
//           the user interacted with.
//   given   DIEN files: each line is an example with its own history and label; nothing is
//           sampled. `--eval_input` (DIEN's test file) becomes the evaluation rows.
// Ids: raw ids are remapped to dense ids 1..n in ascending raw-id order (0 = padding), so data
// sets already numbered 1..n (SASRec files, MovieLens-100K) keep their ids. Data sets without
// categories (seqrec) put every item in category 1. MovieLens categories are 1 + genre index.
#ifndef IPS_WORKER_DATASET_BUILDER_H_
#define IPS_WORKER_DATASET_BUILDER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/manifest.h"

namespace ips {

struct ConvertOptions {
  std::string format;      // movielens100k | movielens1m | seqrec | taobao | dien | events
  std::string input;       // file (or pipe, FIFO), or directory for the MovieLens formats
  std::string eval_input;  // dien only: the test file (optional)
  std::string output;      // directory (created if missing)
  int shards = 1;
  uint64_t seed = 0;
  std::string protocol;  // empty = the format's default (seqrec for ML/seqrec, ctr, given)
  int64_t max_bad_records = 0;
  int64_t max_history = 50;
  // seqrec/ctr: negatives per evaluation list (1..100000: ranking needs at least one) and the
  // cap on evaluated users (>= 1; all eligible users when there are fewer). Unused by `given`.
  int64_t eval_negatives = 100;
  int64_t eval_users = 10000;
  int64_t min_user_events = 1;  // >= 0; users with fewer events are dropped (counted as filtered)
  // Progress callback (lines read so far); may be empty.
  std::function<void(uint64_t lines)> progress;
};

// The formats and protocols accepted (for usage text and validation).
const std::vector<std::string>& ConvertFormats();
std::string DefaultProtocol(const std::string& format);

// Checks the options alone (no I/O): format, protocol and every numeric flag's range, naming
// the flag. ConvertDataset runs it first; the CLI runs it to report a usage error.
Status ValidateConvertOptions(const ConvertOptions& options);

// Checks, before any input is read, that a dataset may be written into `output` (creating
// nothing): refuses (FAILED_PRECONDITION naming the path and what it looks like) first an output
// on a kernel pseudo file system, or one that would be created in a directory there (/proc, /sys,
// cgroup, configfs, ...: ps::CheckNotOnPseudoFileSystem, "--output DIR is on procfs, ..." or
// "--output DIR would be created in AT, which is on procfs, ..."), then an output that exists and
// is not a directory, or whose parent cannot be a directory; a directory whose MANIFEST is not a
// dataset manifest (a training checkpoint's ckpt-<step>, a serving bundle's v-<n>, anything else);
// and a directory without a MANIFEST that holds other entries than a conversion writes (MANIFEST,
// vocab.ips, shard-NNNNN-of-NNNNN.ips, their .tmp copies) and hidden files, e.g. a checkpoint or
// bundle root or an input directory. New, empty and earlier conversions' directories pass.
// ConvertDataset runs it first; the CLI runs it to refuse before printing progress.
Status CheckConvertOutput(const std::string& output);

// Runs the whole conversion. Errors: INVALID_ARGUMENT for bad options, for a malformed line
// ("file:line: field: expected ... (got '...')") when more than max_bad_records lines are bad
// (a MovieLens rating of an item missing from u.item / movies.dat is such a line, and so is a
// movielens1m rating already read from an earlier ratings file of the same directory: every
// ratings*.dat[.gz] there is read, in sorted name order, as one input), and for input
// that would give a dataset the readers reject, that cannot train or that evaluates to NaN or
// to a meaningless ranking ("file: no usable events", "file: no user has >= N events", no user
// with the 3 events leave-one-out evaluation needs, "file: no training rows" when no user keeps
// >= 2 training events, "file: user U interacted with every one of the N items" when a user
// with training rows or an evaluation list has no item left to draw its negatives from);
// NOT_FOUND for missing inputs, DATA_LOSS for unreadable gzip, CheckConvertOutput's error for an
// output that is not a dataset's. Refused input or options leave options.output untouched.
// options.progress is called with the lines read at the end, also when the conversion fails. On
// success returns the manifest written to options.output/MANIFEST; shard files of an earlier
// conversion into the same directory that the new manifest does not list (names exactly like
// ShardFileName's) are then removed.
StatusOr<Manifest> ConvertDataset(const ConvertOptions& options);

// The file name of shard `index` of `count`: "shard-00003-of-00008.ips".
std::string ShardFileName(int index, int count);
constexpr char kVocabFile[] = "vocab.ips";

}  // namespace ips

#endif  // IPS_WORKER_DATASET_BUILDER_H_
