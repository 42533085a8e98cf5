// `ips train --stream SOURCE`: continuous training of a config's CTR model on an append-only event
// log (worker/stream.h), publishing through a hook every N seconds/steps and ending with
//   RESULT train_stream events=.. steps=.. events_per_s=.. examples_per_s=.. auc_window=..
//          publishes=.. freshness_p50_ms=.. freshness_p99_ms=..
// This file owns the command's stream flags and the wiring config -> store -> trainer ->
// StreamTrainer, and the bundle publisher of --stream_publish_dir (serving bundles straight from
// the live trainer and store: a full version, then deltas, that `ips serve` hot-reloads; freshness
// is then measured to the end of each bundle publish; the root's writer lock is held for the whole
// run, so a second writer is refused). train_command.cc owns `ips train`'s flag
// parsing and calls RunStreamTrain; a caller may supply its own StreamCliOptions::make_publisher.
#ifndef IPS_LAUNCH_STREAM_TRAIN_H_
#define IPS_LAUNCH_STREAM_TRAIN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/flags.h"
#include "common/status.h"
#include "ps/embedding_store.h"
#include "worker/stream.h"
#include "worker/trainer.h"

namespace ips {

namespace config {
class Config;
}
class BundleWriter;  // worker/serving.h

struct StreamCliOptions {
  bool follow = true;         // a file source is tailed; false: it ends at its end
  double idle_timeout_s = 0;  // end after this long without new data (0 = never)
  int negatives = 1;
  int64_t max_users = 1 << 20;  // user histories kept (LRU beyond)
  int64_t max_items = 1 << 22;  // negative pool (reservoir beyond)
  double publish_every_s = 10;
  int64_t publish_every_steps = 0;
  double max_batch_delay_s = 0.5;
  int64_t window_events = 10000;
  int64_t max_events = 0;  // 0 = until the source ends (or SIGINT/SIGTERM)
  // Malformed lines skipped (each logged "warning: skipping bad line FILE:LINE: FIELD: ...",
  // counted in the RESULT line's bad_lines) before one fails the stream; 0 = the first fails it.
  int64_t max_bad_records = 0;
  // Non-empty (and make_publisher empty): every publish writes a serving bundle version there
  // (worker/serving.h PublishBundle straight from the live trainer and store): a full bundle
  // first, then deltas against the previous publish, a full one again after publish_full_every
  // deltas (bounding the chain a server loads). `ips serve --bundle DIR` hot-reloads them.
  std::string publish_dir;
  int64_t publish_full_every = 10;
  int publish_keep_versions = 3;
  // Builds the publish hook once the store and trainer exist (both outlive the hook). Empty (and
  // no publish_dir): nothing is published; the RESULT line says publishes=0 and freshness na.
  std::function<StatusOr<StreamPublisher>(Trainer* trainer, ps::EmbeddingStore* store)>
      make_publisher;
};

// Opens options.publish_dir for the stream's publishes (worker/serving.h BundleWriter: checks that
// it is a bundle root, creates it and takes its lock) and refuses a root whose current version
// holds another model type than `config_text`'s. Errors name --stream_publish_dir.
StatusOr<std::shared_ptr<BundleWriter>> OpenPublishDir(const StreamCliOptions& options,
                                                       const std::string& config_text);

// The publisher that writes bundle versions into options.publish_dir (see there) through `writer`
// (nullptr: OpenPublishDir), which it keeps, and with it the root's lock, as long as it lives: the
// bundle's config is `config_text`, its rows the store's tables (a ps::LocalEmbeddingStore), its
// item -> category map the one of the stream's negative pool (*builder, once set; may stay null).
StatusOr<StreamPublisher> MakeBundlePublisher(const StreamCliOptions& options,
                                              const std::string& config_text,
                                              const std::string& source, Trainer* trainer,
                                              ps::EmbeddingStore* store,
                                              std::shared_ptr<const StreamTrainer*> stream,
                                              std::shared_ptr<BundleWriter> writer = nullptr);

// Declares the --stream_* flags on `flags` / reads them back (INVALID_ARGUMENT naming the flag for
// out-of-range values).
void AddStreamFlags(FlagSet* flags);
StatusOr<StreamCliOptions> StreamCliOptionsFromFlags(const FlagSet& flags);

// Runs the stream job of `cfg` (model, tables, optimizer, data.batch_size, data.max_history,
// train.seed, train.num_threads) on `source` ("-" = stdin). Before anything is trained it refuses
// (exit 1) what CheckStreamConfig refuses, options.negatives out of 1..1000, and a
// --stream_publish_dir that OpenPublishDir refuses (the root is checked before the model is
// built, locked before the stream starts, and stays locked for the whole run). Without a publisher
// (no make_publisher, no publish_dir) the RESULT line says publishes=0 and freshness_p50_ms=na
// freshness_p99_ms=na (null in the metrics JSON). SIGINT/SIGTERM end the stream gracefully (the
// examples read so far are trained and published, the RESULT line printed); previous handlers are
// restored on return. Returns kExitOk, or kExitError after printing "error: ..." to stderr (bad
// line: "SOURCE:LINE: FIELD: ...").
int RunStreamTrain(const config::Config& cfg, const std::string& source, const RunSinks& sinks,
                   const StreamCliOptions& options);

}  // namespace ips

#endif  // IPS_LAUNCH_STREAM_TRAIN_H_
