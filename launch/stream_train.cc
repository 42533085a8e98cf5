#include "launch/stream_train.h"

#include <cmath>
#include <csignal>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "common/result_line.h"
#include "launch/commands.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "worker/metrics_line.h"
#include "worker/serving.h"

namespace ips {
namespace {

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

// The RESULT line's undefined metric (no publish, a one-class window): "na" (null on
// --metrics_out).
std::string Na(double v, int digits) { return std::isfinite(v) ? Fixed(v, digits) : "na"; }

int Fail(const Status& s) {
  std::cerr << "error: " << s.ToString() << "\n";
  return kExitError;
}

void StreamSignalHandler(int) { RequestStreamStopFromSignal(); }

// Installs the stop handler for SIGINT/SIGTERM for the lifetime of the object.
class ScopedStopSignals {
 public:
  ScopedStopSignals() {
    ClearStreamStopRequest();
    struct sigaction sa = {};
    sa.sa_handler = StreamSignalHandler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~ScopedStopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    ClearStreamStopRequest();
  }

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

}  // namespace

void AddStreamFlags(FlagSet* flags) {
  flags->Bool("stream_no_follow",
              "--stream FILE: end at the end of the file instead of tailing it");
  flags->Double("stream_idle_timeout_s", 0,
                "--stream: end after this many seconds without new events (0 = never)");
  flags->Int("stream_negatives", 1, "--stream: sampled negatives per event (1..1000)");
  flags->Int("stream_max_users", 1 << 20, "--stream: user histories kept (least recent evicted)");
  flags->Int("stream_max_items", 1 << 22, "--stream: items in the negative pool (reservoir)");
  flags->Double("stream_publish_every_s", 10, "--stream: publish every N seconds (0 = off)");
  flags->Int("stream_publish_every_steps", 0, "--stream: publish every N steps (0 = off)");
  flags->Double("stream_max_batch_delay_s", 0.5,
                "--stream: train a partial batch after waiting this long for events");
  flags->Int("stream_window_events", 10000, "--stream: events per prequential AUC window");
  flags->Int("stream_max_events", 0, "--stream: stop after N events (0 = at the end / SIGINT)");
  flags->Int("stream_max_bad_records", 0,
             "--stream: skip and count up to N malformed lines, each logged with FILE:LINE: FIELD "
             "(the N+1-th fails; as `ips data convert --max_bad_records`)");
  flags->String("stream_publish_dir", "",
                "--stream: publish serving bundles (full, then deltas) into this bundle root, "
                "which `ips serve --bundle DIR` hot-reloads");
  flags->Int("stream_publish_full_every", 10,
             "--stream_publish_dir: a full bundle after this many deltas (bounds the chain)");
  flags->Int("stream_publish_keep_versions", 3,
             "--stream_publish_dir: bundle versions kept (plus the bases of kept deltas)");
}

Status CheckStreamConfig(const config::Config& cfg) {
  // Streaming training writes no checkpoints (its state goes out as serving bundles): refuse
  // what it would otherwise silently ignore. Defined here, not in train_command.cc, so that
  // RunStreamTrain (linked without it by tests) runs it too.
  if (!cfg.checkpoint().dir().empty())
    return InvalidArgumentError(
        "checkpoint.dir is set, but --stream writes no checkpoints (it publishes serving "
        "bundles with --stream_publish_dir)");
  // The stream trains the CTR Trainer and publishes serving bundles: the models a bundle holds.
  return CheckBundleModelType(cfg, "`ips train --stream`");
}

namespace {

// --stream_negatives: every event is a positive, so without a negative the labels are all 1 (the
// model learns a constant and the window AUC is undefined).
constexpr int64_t kMinNegatives = 1, kMaxNegatives = 1000;

Status CheckNegatives(int64_t negatives) {
  if (negatives >= kMinNegatives && negatives <= kMaxNegatives) return Status::Ok();
  return InvalidArgumentError("--stream_negatives " + std::to_string(negatives) + ": expected " +
                              std::to_string(kMinNegatives) + ".." + std::to_string(kMaxNegatives) +
                              " (sampled negatives per event: every event is a positive, so at "
                              "least 1 is needed for the model to learn anything)");
}

}  // namespace

StatusOr<StreamCliOptions> StreamCliOptionsFromFlags(const FlagSet& flags) {
  StreamCliOptions o;
  o.follow = !flags.GetBool("stream_no_follow");
  o.idle_timeout_s = flags.GetDouble("stream_idle_timeout_s");
  o.negatives = static_cast<int>(flags.GetInt("stream_negatives"));
  o.max_users = flags.GetInt("stream_max_users");
  o.max_items = flags.GetInt("stream_max_items");
  o.publish_every_s = flags.GetDouble("stream_publish_every_s");
  o.publish_every_steps = flags.GetInt("stream_publish_every_steps");
  o.max_batch_delay_s = flags.GetDouble("stream_max_batch_delay_s");
  o.window_events = flags.GetInt("stream_window_events");
  o.max_events = flags.GetInt("stream_max_events");
  o.max_bad_records = flags.GetInt("stream_max_bad_records");
  o.publish_dir = flags.GetString("stream_publish_dir");
  o.publish_full_every = flags.GetInt("stream_publish_full_every");
  const int64_t keep = flags.GetInt("stream_publish_keep_versions");
  const auto bad = [](const char* flag, const std::string& v, const char* want) {
    return InvalidArgumentError(std::string("--") + flag + " " + v + ": expected " + want);
  };
  if (o.idle_timeout_s < 0)
    return bad("stream_idle_timeout_s", FormatNumber(o.idle_timeout_s), ">= 0");
  IPS_RETURN_IF_ERROR(CheckNegatives(flags.GetInt("stream_negatives")));
  if (o.max_users < 1) return bad("stream_max_users", std::to_string(o.max_users), ">= 1");
  if (o.max_items < 2) return bad("stream_max_items", std::to_string(o.max_items), ">= 2");
  if (o.publish_every_s < 0)
    return bad("stream_publish_every_s", FormatNumber(o.publish_every_s), ">= 0");
  if (o.publish_every_steps < 0)
    return bad("stream_publish_every_steps", std::to_string(o.publish_every_steps), ">= 0");
  if (o.max_batch_delay_s < 0)
    return bad("stream_max_batch_delay_s", FormatNumber(o.max_batch_delay_s), ">= 0");
  if (o.window_events < 1)
    return bad("stream_window_events", std::to_string(o.window_events), ">= 1");
  if (o.max_events < 0) return bad("stream_max_events", std::to_string(o.max_events), ">= 0");
  if (o.max_bad_records < 0)
    return bad("stream_max_bad_records", std::to_string(o.max_bad_records), ">= 0");
  if (o.publish_full_every < 0)
    return bad("stream_publish_full_every", std::to_string(o.publish_full_every), ">= 0");
  if (keep < 1 || keep > 1000000)
    return bad("stream_publish_keep_versions", std::to_string(keep), "1..1000000");
  o.publish_keep_versions = static_cast<int>(keep);
  return o;
}

StatusOr<std::shared_ptr<BundleWriter>> OpenPublishDir(const StreamCliOptions& options,
                                                       const std::string& config_text) {
  IPS_ASSIGN_OR_RETURN(std::unique_ptr<BundleWriter> writer,
                       BundleWriter::Open(options.publish_dir, "--stream_publish_dir"));
  IPS_RETURN_IF_ERROR(writer->CheckModelType(config_text));
  return std::shared_ptr<BundleWriter>(std::move(writer));
}

StatusOr<StreamPublisher> MakeBundlePublisher(const StreamCliOptions& options,
                                              const std::string& config_text,
                                              const std::string& source, Trainer* trainer,
                                              ps::EmbeddingStore* store,
                                              std::shared_ptr<const StreamTrainer*> stream,
                                              std::shared_ptr<BundleWriter> writer) {
  if (writer == nullptr) {
    IPS_ASSIGN_OR_RETURN(writer, OpenPublishDir(options, config_text));
  }
  auto* local = dynamic_cast<ps::LocalEmbeddingStore*>(store);
  if (local == nullptr)
    return UnimplementedError("--stream_publish_dir: publishing needs the in-process store");
  // The source is built once: the references stay valid (the model's buffers and the store's
  // tables live as long as the trainer and the store), the values are read at each publish.
  auto src = std::make_shared<BundleSource>();
  src->config_text = config_text;
  src->origin = "stream:" + source;
  CheckpointContent content;
  AddModelState(&trainer->model(), nullptr, &content);
  src->tensors = content.tensors;
  for (int i = 0; i < local->num_tables(); ++i) {
    IPS_ASSIGN_OR_RETURN(ps::DynamicTable * t, local->table(i));
    src->tables.push_back(t);
  }
  struct State {
    std::shared_ptr<const Bundle> last;  // the previous publish (the next delta's base)
    int64_t deltas_since_full = 0;
  };
  auto state = std::make_shared<State>();
  ExportOptions eo;
  eo.keep_versions = options.publish_keep_versions;
  const int64_t full_every = options.publish_full_every;
  // The publisher owns the writer, and with it the root's lock, until the stream is destroyed.
  return StreamPublisher([src, state, eo, full_every, stream, writer](int64_t step, int64_t,
                                                                      double) mutable -> Status {
    src->step = step;
    if (*stream != nullptr) src->item_cats = (*stream)->builder().PoolCategoryMap();
    // The first publish of a run is full: the root may hold another run's versions.
    eo.delta = state->last != nullptr && state->deltas_since_full < full_every;
    IPS_ASSIGN_OR_RETURN(ExportResult r, writer->Publish(*src, eo, state->last));
    state->deltas_since_full = r.delta_of != 0 ? state->deltas_since_full + 1 : 0;
    state->last = std::move(r.bundle);
    return Status::Ok();
  });
}

int RunStreamTrain(const config::Config& cfg, const std::string& source, const RunSinks& sinks,
                   const StreamCliOptions& options) {
  // A stream writes no checkpoints (its state goes out as bundles): a checkpoint.dir would be
  // ignored, so it is refused here too, not only by `ips train --stream` (RunTrainCommand), for
  // every caller of this function.
  if (Status s = CheckStreamConfig(cfg); !s.ok()) return Fail(s);
  // Library callers get StreamCliOptionsFromFlags' range check too.
  if (Status s = CheckNegatives(options.negatives); !s.ok()) return Fail(s);
  // A --stream_publish_dir that is no bundle root is refused before anything is built or written
  // (MakeBundlePublisher locks it, before the stream starts).
  if (!options.make_publisher && !options.publish_dir.empty()) {
    if (Status s = CheckBundleRoot(options.publish_dir, "--stream_publish_dir"); !s.ok())
      return Fail(s);
  }
  // TrainJobFromConfig maps model, tables and optimizer, and insists on a data source for the
  // batch trainers; the stream is ours, so name it there (nothing reads data.train_dir here).
  config::Config c = cfg;
  if (!c.data().has_synthetic() && c.data().train_dir().empty())
    c.mutable_data()->set_train_dir("stream:" + source);
  auto job = TrainJobFromConfig(c);
  if (!job.ok()) return Fail(job.status());
  auto store = ps::LocalEmbeddingStore::CreateThreaded(job->tables, job->trainer.num_threads);
  if (!store.ok()) return Fail(store.status());
  auto trainer = Trainer::Create(job->trainer, store->get());
  if (!trainer.ok()) return Fail(trainer.status());

  StreamPublisher publisher;
  auto stream_slot = std::make_shared<const StreamTrainer*>(nullptr);
  if (options.make_publisher) {
    auto p = options.make_publisher(trainer->get(), store->get());
    if (!p.ok()) return Fail(p.status());
    publisher = std::move(*p);
  } else if (!options.publish_dir.empty()) {
    // Takes the root's lock (held until the stream is destroyed) before anything is trained: a
    // second run publishing into it, or a root of another model type, is refused up front.
    auto p = MakeBundlePublisher(options, ConfigToText(cfg), source, trainer->get(), store->get(),
                                 stream_slot);
    if (!p.ok()) return Fail(p.status());
    publisher = std::move(*p);
  }
  StreamTrainerOptions so;
  so.batch_size = cfg.data().batch_size();
  so.examples.max_len = cfg.data().max_history();
  so.examples.negatives = options.negatives;
  so.examples.max_users = options.max_users;
  so.examples.max_items = options.max_items;
  so.examples.seed = cfg.train().seed();
  so.publish_every_s = options.publish_every_s;
  so.publish_every_steps = options.publish_every_steps;
  so.max_batch_delay_s = options.max_batch_delay_s;
  so.window_events = options.window_events;
  so.max_events = options.max_events;
  auto st = StreamTrainer::Create(so, trainer->get(), std::move(publisher));
  if (!st.ok()) return Fail(st.status());
  *stream_slot = st->get();

  EventSourceOptions src_o;
  src_o.follow = options.follow;
  src_o.idle_timeout_s = options.idle_timeout_s;
  src_o.max_bad_records = options.max_bad_records;
  auto src = EventStreamSource::Open(source, src_o);
  if (!src.ok()) return Fail(src.status());

  const std::string model = ModelKindName(job->trainer.model.kind);
  std::cerr << "train --stream: model=" << model << " source=" << (*src)->name()
            << (options.follow ? " (follow)" : "") << " batch=" << so.batch_size
            << " seq=" << so.examples.max_len << " negatives=" << so.examples.negatives
            << " max_users=" << so.examples.max_users << " publish_every_s=" << so.publish_every_s
            << " publish_every_steps=" << so.publish_every_steps
            << (options.publish_dir.empty() ? "" : " publish_dir=" + options.publish_dir)
            << " threads=" << job->trainer.num_threads << "\n";
  StatusOr<StreamTrainResult> result = [&] {
    ScopedStopSignals signals;
    return (*st)->Run(src->get(), sinks);
  }();
  if (!result.ok()) return Fail(result.status());
  const StreamTrainResult& r = *result;
  const double auc = r.windows.empty() ? std::nan("") : r.windows.back().auc;
  // Without a publisher the stream's publish points write nothing: no publish happened and there
  // is no freshness to report (it would measure only the time to the next publish point).
  const bool publishing = options.make_publisher || !options.publish_dir.empty();
  const int64_t publishes = publishing ? r.publishes : 0;
  const double fresh_p50 = publishing ? 1e3 * r.freshness_p50_s : std::nan("");
  const double fresh_p99 = publishing ? 1e3 * r.freshness_p99_s : std::nan("");
  std::cerr << "streamed " << r.events << " events (" << r.examples << " examples) in "
            << Fixed(r.seconds, 1) << " s, " << r.steps << " steps, "
            << (publishing ? std::to_string(publishes) + " publishes"
                           : std::string("nothing published (no --stream_publish_dir)"))
            << "; histories: " << r.history_users << " users, " << r.history_evictions
            << " evicted, " << r.history_memory_bytes << " of " << r.history_memory_bound
            << " bytes; negative pool " << r.pool_items << " items";
  if (r.bad_lines > 0) std::cerr << "; " << r.bad_lines << " bad lines skipped";
  if (r.rotations > 0) std::cerr << "; followed " << r.rotations << " rotations of the file";
  if ((*src)->pending_bytes() > 0)
    std::cerr << "; an unterminated last line (" << (*src)->pending_bytes()
              << " bytes) was left unread";
  std::cerr << "\n";

  ResultLine line("train_stream");
  line.Add("model", model)
      .Add("events", r.events)
      .Add("examples", r.examples)
      .Add("steps", r.steps)
      .Add("events_per_s", Fixed(r.events_per_s, 1))
      .Add("examples_per_s", Fixed(r.examples_per_s, 1))
      .Add("loss", Fixed(r.mean_loss, 4))
      .Add("auc_window", Fixed(auc, 4))
      .Add("publishes", publishes)
      .Add("freshness_p50_ms", Na(fresh_p50, 1))
      .Add("freshness_p99_ms", Na(fresh_p99, 1))
      .Add("bad_lines", r.bad_lines);
  if (sinks.metrics_out != nullptr) {
    // The RESULT line's figures, under the same names (phase "stream_result").
    MetricsLine("stream_result", model)
        .Int("events", r.events)
        .Int("examples", r.examples)
        .Int("steps", r.steps)
        .Decimals("events_per_s", r.events_per_s, 1)
        .Decimals("examples_per_s", r.examples_per_s, 1)
        .Decimals("loss", r.mean_loss, 6)
        .Decimals("auc_window", auc, 6)
        .Int("bad_lines", r.bad_lines)
        .Int("publishes", publishes)
        .Decimals("freshness_p50_ms", fresh_p50, 3)
        .Decimals("freshness_p99_ms", fresh_p99, 3)
        .WriteTo(sinks.metrics_out);
    if (!*sinks.metrics_out) return Fail(DataLossError("writing the metrics output"));
  }
  line.Print();
  return kExitOk;
}

}  // namespace ips
