// Interest tracking under a planted drift: a DIN trained on a stream whose users all switch to
// disjoint interests half-way (worker/synth.h, drift_at = 0.5, drift_users = 1) recovers its
// prequential AUC on post-drift events to >= 0.95x that of a model trained from scratch on the
// post-drift events alone (same example builder, same number of events; its last window).
//
// Both runs go through the real path: events written by the synthetic generator to a temp file,
// read by EventStreamSource, built by StreamExampleBuilder, trained by StreamTrainer with a
// publisher hook. The test prints the AUC curve, the number of post-drift events the streaming
// model needed, and throughput/freshness, and fails if the streaming model never gets there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/models/trainer_test_util.h"
#include "worker/record_parsers.h"
#include "worker/stream.h"
#include "worker/synth.h"

namespace ips {
namespace {

constexpr int kMaxLen = 20;
constexpr int kBatch = 256;
constexpr int64_t kWindow = 5000;

SynthOptions DriftOptions() {
  SynthOptions o;
  o.events = 200000;
  o.users = 2000;
  o.items = 5000;
  o.categories = 50;
  o.drift_at = 0.5;
  o.drift_users = 1.0;
  o.domain1_fraction = 0;  // one domain, no cold start: only the drift changes over time
  o.cold_users = 0;
  o.cold_items = 0;
  o.seed = 7;
  return o;
}

struct RunOutcome {
  StreamTrainResult result;
  int64_t publishes_seen = 0;
};

// Streams `path` through a fresh DIN (small widths) and a fresh builder.
RunOutcome StreamFile(const std::string& path) {
  RunOutcome out;
  TrainerOptions t;
  t.model.embedding_dim = 8;
  t.model.max_len = kMaxLen;
  t.model.max_batch = kBatch;
  t.model.din.attention_hidden1 = 16;
  t.model.din.attention_hidden2 = 8;
  t.model.din.mlp_hidden = {32, 16};
  t.model.seed = 3;
  t.dense_optimizer = kernels::OptimizerHyper::Adam(2e-3);
  t.num_threads = 1;
  const SynthOptions so = DriftOptions();
  auto store = testing_util::MakeStore(8, ps::OptimizerOptions::Type::kAdam, 1e-2,
                                       static_cast<double>(so.items) + 1, so.categories);
  if (store == nullptr) {
    ADD_FAILURE() << "store";
    return out;
  }
  auto trainer = Trainer::Create(t, store.get());
  if (!trainer.ok()) {
    ADD_FAILURE() << trainer.status();
    return out;
  }
  StreamTrainerOptions o;
  o.batch_size = kBatch;
  o.examples.max_len = kMaxLen;
  o.examples.negatives = 1;
  o.examples.seed = 1;
  o.examples.max_users = 4096;  // above the 2000 users: no eviction, a meaningful bound
  o.window_events = kWindow;
  o.publish_every_steps = 50;
  // The file is complete before the run: batches are always full (no partial batch on a
  // momentarily empty queue), which makes the run deterministic.
  o.max_batch_delay_s = 0;
  int64_t last_newest = -1;
  auto st = StreamTrainer::Create(o, trainer->get(), [&](int64_t, int64_t newest, double) {
    EXPECT_GT(newest, last_newest);
    last_newest = newest;
    ++out.publishes_seen;
    return Status();
  });
  if (!st.ok()) {
    ADD_FAILURE() << st.status();
    return out;
  }
  EventSourceOptions src_o;
  src_o.follow = false;
  auto src = EventStreamSource::Open(path, src_o);
  if (!src.ok()) {
    ADD_FAILURE() << src.status();
    return out;
  }
  auto r = (*st)->Run(src->get(), RunSinks{});
  if (!r.ok()) {
    ADD_FAILURE() << r.status();
    return out;
  }
  out.result = std::move(*r);
  return out;
}

TEST(StreamDrift, StreamingModelRecoversToScratchModelAfterPlantedDrift) {
  const SynthOptions so = DriftOptions();
  auto model = SynthModel::Create(so);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t drift = (*model)->DriftIndex();
  ASSERT_EQ(drift, so.events / 2);
  ASSERT_EQ(drift % kWindow, 0) << "windows must start at the drift";

  const std::string dir = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
  const std::string full = dir + "/ips_stream_drift_" + std::to_string(getpid()) + ".tsv";
  const std::string post = dir + "/ips_stream_drift_post_" + std::to_string(getpid()) + ".tsv";
  {
    std::ofstream f_full(full, std::ios::binary), f_post(post, std::ios::binary);
    SynthGenerator gen(model->get());
    Event e;
    std::string line;
    while (gen.Next(&e)) {
      line.clear();
      AppendEventLine(e, &line);
      f_full << line;
      if (gen.index() > drift) f_post << line;  // index() is already past e
    }
    ASSERT_TRUE(f_full.good() && f_post.good());
  }

  const RunOutcome stream = StreamFile(full);
  const RunOutcome scratch = StreamFile(post);
  std::remove(full.c_str());
  std::remove(post.c_str());
  ASSERT_EQ(stream.result.events, so.events);
  ASSERT_EQ(scratch.result.events, so.events - drift);
  ASSERT_FALSE(scratch.result.windows.empty());

  const double scratch_final = scratch.result.windows.back().auc;
  const double target = 0.95 * scratch_final;
  double pre_drift = NAN, first_post = NAN, min_post = 1;
  int64_t recovered_after = -1;
  std::printf("window_end_event  stream_auc  scratch_auc(same post-drift offset)\n");
  for (const StreamWindow& w : stream.result.windows) {
    const int64_t end = w.last_event + 1;
    double scratch_auc = NAN;
    if (w.first_event >= drift) {
      const size_t k = static_cast<size_t>((w.first_event - drift) / kWindow);
      if (k < scratch.result.windows.size()) scratch_auc = scratch.result.windows[k].auc;
      if (std::isnan(first_post)) first_post = w.auc;
      min_post = std::min(min_post, w.auc);
      if (recovered_after < 0 && w.auc >= target) recovered_after = end - drift;
    } else if (end == drift) {
      pre_drift = w.auc;
    }
    std::printf("%9lld  %.4f  %.4f\n", static_cast<long long>(end), w.auc, scratch_auc);
  }
  const StreamTrainResult& r = stream.result;
  std::printf(
      "drift at event %lld: stream AUC last pre-drift window %.4f, first post-drift window %.4f, "
      "min post-drift %.4f, final %.4f; scratch model final window %.4f (target 0.95x = %.4f); "
      "recovered after %lld post-drift events\n",
      static_cast<long long>(drift), pre_drift, first_post, min_post, r.windows.back().auc,
      scratch_final, target, static_cast<long long>(recovered_after));
  std::printf(
      "stream: %lld events, %lld examples, %lld steps in %.1f s (%.0f events/s, %.0f examples/s), "
      "%lld publishes, freshness p50 %.1f ms p99 %.1f ms; histories %lld users, %lld of %lld "
      "bytes\n",
      static_cast<long long>(r.events), static_cast<long long>(r.examples),
      static_cast<long long>(r.steps), r.seconds, r.events_per_s, r.examples_per_s,
      static_cast<long long>(r.publishes), 1e3 * r.freshness_p50_s, 1e3 * r.freshness_p99_s,
      static_cast<long long>(r.history_users), static_cast<long long>(r.history_memory_bytes),
      static_cast<long long>(r.history_memory_bound));

  // Both models learned something (a constant scorer has AUC 0.5).
  EXPECT_GT(pre_drift, 0.65);
  EXPECT_GT(scratch_final, 0.65);
  EXPECT_EQ(stream.publishes_seen, r.publishes);
  EXPECT_GT(r.publishes, 10);
  EXPECT_LE(r.history_memory_bytes, r.history_memory_bound);
  // A backlog (the whole file is there at once) fills every batch: no tiny steps.
  EXPECT_LE(r.steps, r.examples / (kBatch - 2) + 2);
  // The claim: the streaming model gets to 0.95x the scratch model within the stream.
  EXPECT_GE(recovered_after, 0) << "the streaming model never reached 0.95 x " << scratch_final;
}

}  // namespace
}  // namespace ips
