// `ips train --stream SOURCE`: continuous training of a config's CTR model on an append-only event
// log (worker/stream.h), publishing through a hook every N seconds/steps and ending with
//   RESULT train_stream events=.. steps=.. events_per_s=.. examples_per_s=.. auc_window=..
//          publishes=.. freshness_p50_ms=.. freshness_p99_ms=..
// This file owns the command's stream flags and the wiring config -> store -> trainer ->
// StreamTrainer, and the bundle publisher of --stream_publish_dir (serving bundles straight from
// the live trainer and store: a full version, then deltas, that `ips serve` hot-reloads; freshness
// is then measured to the end of each bundle publish). train_command.cc owns `ips train`'s flag
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
  // Non-empty (and make_publisher empty): every publish writes a serving bundle version there
  // (worker/serving.h PublishBundle straight from the live trainer and store): a full bundle
  // first, then deltas against the previous publish, a full one again after publish_full_every
  // deltas (bounding the chain a server loads). `ips serve --bundle DIR` hot-reloads them.
  std::string publish_dir;
  int64_t publish_full_every = 10;
  int publish_keep_versions = 3;
  // Builds the publish hook once the store and trainer exist (both outlive the hook). Empty:
  // publishes are no-ops (freshness then measures until the update is in the model).
  std::function<StatusOr<StreamPublisher>(Trainer* trainer, ps::EmbeddingStore* store)>
      make_publisher;
};

// The publisher that writes bundle versions into options.publish_dir (see there): the bundle's
// config is `config_text`, its rows the store's tables (a ps::LocalEmbeddingStore), its
// item -> category map the one of the stream's negative pool (*builder, once set; may stay null).
StatusOr<StreamPublisher> MakeBundlePublisher(const StreamCliOptions& options,
                                              const std::string& config_text,
                                              const std::string& source, Trainer* trainer,
                                              ps::EmbeddingStore* store,
                                              std::shared_ptr<const StreamTrainer*> stream);

// Declares the --stream_* flags on `flags` / reads them back (INVALID_ARGUMENT naming the flag for
// out-of-range values).
void AddStreamFlags(FlagSet* flags);
StatusOr<StreamCliOptions> StreamCliOptionsFromFlags(const FlagSet& flags);

// Runs the stream job of `cfg` (model, tables, optimizer, data.batch_size, data.max_history,
// train.seed, train.num_threads) on `source` ("-" = stdin). SIGINT/SIGTERM end the stream
// gracefully (the examples read so far are trained and published, the RESULT line printed);
// previous handlers are restored on return. Returns kExitOk, or kExitError after printing
// "error: ..." to stderr (bad line: "SOURCE:LINE: FIELD: ...").
int RunStreamTrain(const config::Config& cfg, const std::string& source, const RunSinks& sinks,
                   const StreamCliOptions& options);

}  // namespace ips

#endif  // IPS_LAUNCH_STREAM_TRAIN_H_
