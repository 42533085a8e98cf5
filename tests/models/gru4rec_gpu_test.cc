// GRU4Rec on CUDA (device = kCuda) against the same model on the CPU: the same weights
// (initialised on the host either way), fresh random inputs with lengths 0, 1 and max, GRU and
// LSTM cells, with and without the projection. Forward (loss, user vectors), backward (every dense
// gradient, every pulled row's gradient, poisoned so that an unwritten row fails), an inference
// forward after the host weights changed (the upload path), and the SeqTrainer driving both
// devices for several steps. Label `gpu`: skipped without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "kernels/context.h"
#include "models/gru4rec.h"
#include "tests/models/gpu_test_util.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"
#include "worker/synthetic_batches.h"

namespace ips {
namespace {

using models::Gru4Rec;
using models::Gru4RecOptions;
using testing::AllClose;
using testing_util::kGpuMaxRelL2;
using testing_util::RelL2;

class Gru4RecGpu : public testing_util::CudaTest {};

// B sequences of T steps over 2B + 5 pulled rows; [3 x B x T] indices (inputs, positives,
// negatives); lengths 0, 1 and T among random ones.
struct Batch {
  int64_t B, T, D, rows;
  std::vector<int32_t> lengths;
  std::vector<int64_t> index;
  std::vector<float> item_rows;

  Batch(int64_t b, int64_t t, int64_t d, uint64_t seed) : B(b), T(t), D(d), rows(2 * b + 5) {
    Rng rng(seed);
    lengths.resize(B);
    for (int64_t i = 0; i < B; ++i)
      lengths[i] = static_cast<int32_t>(rng.UniformInt(static_cast<uint64_t>(T + 1)));
    lengths[0] = 0;
    lengths[1] = 1;
    lengths[2] = static_cast<int32_t>(T);
    for (int64_t i = 0; i < 3 * B * T; ++i)
      index.push_back(static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(rows))));
    for (int64_t i = 0; i < rows * D; ++i)
      item_rows.push_back(static_cast<float>(2 * rng.Uniform() - 1));
  }
  models::SeqInputs<float> Inputs() const {
    models::SeqInputs<float> in;
    in.batch = B;
    in.lengths = lengths.data();
    in.item_index = index.data();
    in.item_rows = item_rows.data();
    in.num_item_rows = rows;
    return in;
  }
};

struct Pass {
  float loss = 0;
  std::vector<float> users, dense_grads, d_rows;
};

Pass TrainingPass(models::SeqModel<float>& m, const kernels::Context& ctx, const Batch& b) {
  Pass p;
  const auto in = b.Inputs();
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.users.assign(m.user_vectors(), m.user_vectors() + b.B * b.D);
  p.d_rows.assign(b.rows * b.D, NAN);  // poisoned: every row must be written
  EXPECT_OK(m.Backward(ctx, in, p.d_rows.data()));
  p.dense_grads.assign(m.params().grads(), m.params().grads() + m.params().size());
  return p;
}

TEST_F(Gru4RecGpu, ForwardBackwardMatchCpu_GruLstm_ProjNoProj) {
  for (kernels::RnnCell cell : {kernels::RnnCell::kGru, kernels::RnnCell::kLstm}) {
    for (int64_t hidden : {int64_t{0}, int64_t{40}}) {
      SCOPED_TRACE(std::string(cell == kernels::RnnCell::kGru ? "gru" : "lstm") + " hidden " +
                   std::to_string(hidden));
      Gru4RecOptions o;
      o.embedding_dim = 32;
      o.max_len = 50;
      o.max_batch = 80;
      o.hidden = hidden;
      o.cell = cell;
      o.seed = 9;
      auto cpu = Gru4Rec<float>::Create(o);
      o.device = kernels::Device::kCuda;
      auto gpu = Gru4Rec<float>::Create(o);
      ASSERT_OK(cpu.status());
      ASSERT_OK(gpu.status());
      testing_util::ExpectSameInitialWeights((*cpu)->params(), (*gpu)->params());
      kernels::Context cpu_ctx, gpu_ctx;
      gpu_ctx.device = kernels::Device::kCuda;
      // A batch below max_batch, then a smaller one (buffers are sized for 80 rows).
      for (int64_t B : {int64_t{67}, int64_t{9}}) {
        SCOPED_TRACE("B " + std::to_string(B));
        const Batch batch(B, o.max_len, o.embedding_dim, 100 + static_cast<uint64_t>(B));
        const Pass want = TrainingPass(**cpu, cpu_ctx, batch);
        const Pass got = TrainingPass(**gpu, gpu_ctx, batch);
        EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
        EXPECT_LT(RelL2(got.users, want.users), kGpuMaxRelL2);
        EXPECT_LT(RelL2(got.d_rows, want.d_rows), kGpuMaxRelL2);
        for (float g : got.d_rows) ASSERT_FALSE(std::isnan(g)) << "a row gradient unwritten";
        testing_util::ExpectDenseGradsClose((*cpu)->params(), got.dense_grads, want.dense_grads);
      }
      // Inference after the host weights moved: the CUDA model must upload them.
      for (auto* m : {cpu->get(), gpu->get()}) {
        auto& p = m->params();
        for (int64_t i = 0; i < p.size(); ++i) p.values()[i] -= 0.05f * p.grads()[i];
      }
      const Batch eval(23, o.max_len, o.embedding_dim, 7);
      ASSERT_OK((*cpu)->Forward(cpu_ctx, eval.Inputs(), false, nullptr));
      ASSERT_OK((*gpu)->Forward(gpu_ctx, eval.Inputs(), false, nullptr));
      const std::vector<float> want((*cpu)->user_vectors(),
                                    (*cpu)->user_vectors() + eval.B * eval.D);
      const std::vector<float> got((*gpu)->user_vectors(),
                                   (*gpu)->user_vectors() + eval.B * eval.D);
      EXPECT_LT(RelL2(got, want), kGpuMaxRelL2);
    }
  }
}

TEST_F(Gru4RecGpu, RejectsAContextOfAnotherDevice) {
  Gru4RecOptions o;
  o.embedding_dim = 8;
  o.max_len = 6;
  o.max_batch = 4;
  o.device = kernels::Device::kCuda;
  auto gpu = Gru4Rec<float>::Create(o);
  ASSERT_OK(gpu.status());
  const Batch batch(4, 6, 8, 1);
  float loss = 0;
  EXPECT_EQ((*gpu)->Forward(kernels::Context{}, batch.Inputs(), true, &loss).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(Gru4RecGpu, SeqTrainerLossesMatchCpu_30Steps) {
  SyntheticOptions so;
  so.num_items = 3000;
  so.num_categories = 10;
  so.seq_len = 20;
  so.seed = 3;
  auto gen = SyntheticBatches::Create(so);
  ASSERT_OK(gen.status());
  Gru4RecOptions o;
  o.embedding_dim = 16;
  o.max_len = 20;
  o.max_batch = 64;
  o.hidden = 24;
  o.seed = 5;
  const testing_util::TrainedSeq cpu = testing_util::TrainGru4RecSteps(**gen, o, 3001, 30, 64);
  o.device = kernels::Device::kCuda;
  const testing_util::TrainedSeq gpu = testing_util::TrainGru4RecSteps(**gen, o, 3001, 30, 64);
  ASSERT_EQ(gpu.losses.size(), 30u);
  // Rounding differences compound over steps through Adam: a loose relative bound that a broken
  // path (a missing upload, gradients left on the device) misses by far.
  EXPECT_TRUE(AllClose(gpu.losses, cpu.losses, {1e-4, 1e-2}));
  EXPECT_LT(RelL2(gpu.weights_and_scores, cpu.weights_and_scores), 1e-2);
  EXPECT_NE(gpu.losses.front(), gpu.losses.back());
}

}  // namespace
}  // namespace ips
