// DIN and the pooled baseline on CUDA (device = kCuda) against the same models on the CPU: the same
// weights (initialised on the host either way), fresh random inputs with lengths 0, 1 and max,
// PReLU and Dice, raw and softmax attention. Forward (loss, logits), backward (every dense
// gradient, every pulled row's gradient), an evaluation forward after the host weights changed (the
// upload path), and the Trainer driving both devices for several steps (DIEN and MIND too; their
// model-level checks are dien_gpu_test and mind_gpu_test). Label `gpu`: skipped
// without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "kernels/context.h"
#include "models/din.h"
#include "models/pooled.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"
#include "worker/model_factory.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {
namespace {

using models::Din;
using models::DinOptions;
using models::MlpActivation;
using testing::AllClose;
using testing::RelativeL2;

// Float on both devices; the CUDA kernels sum in other orders (atomics, cuBLAS), so compare with
// the relative L2 error METHOD.md uses for float32 paths, plus a loose element-wise bound.
constexpr double kMaxRelL2 = 1e-4;
constexpr testing::Tolerance kElementwise{1e-4, 2e-3};

class DinGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
};

struct Batch {
  int64_t B, T, D, rows_item, rows_cat;
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index, cat_index;
  std::vector<float> item_rows, cat_rows, labels;

  Batch(int64_t b, int64_t t, int64_t d, uint64_t seed)
      : B(b), T(t), D(d), rows_item(3 * b), rows_cat(7) {
    Rng rng(seed);
    lengths.resize(B);
    for (int64_t i = 0; i < B; ++i)
      lengths[i] = static_cast<int32_t>(rng.UniformInt(static_cast<uint64_t>(T + 1)));
    lengths[0] = 0;
    lengths[1] = 1;
    lengths[2] = static_cast<int32_t>(T);
    const int64_t n = B * T + B;
    for (int64_t i = 0; i < n; ++i) {
      item_index.push_back(static_cast<int64_t>(rng.UniformInt(rows_item)));
      cat_index.push_back(static_cast<int64_t>(rng.UniformInt(rows_cat)));
    }
    for (int64_t i = 0; i < rows_item * D; ++i)
      item_rows.push_back(static_cast<float>(2 * rng.Uniform() - 1));
    for (int64_t i = 0; i < rows_cat * D; ++i)
      cat_rows.push_back(static_cast<float>(2 * rng.Uniform() - 1));
    for (int64_t i = 0; i < B; ++i) labels.push_back(rng.Uniform() < 0.5 ? 1.0f : 0.0f);
  }
  models::CtrInputs<float> Inputs() const {
    models::CtrInputs<float> in;
    in.batch = B;
    in.lengths = lengths.data();
    in.item_index = item_index.data();
    in.cat_index = cat_index.data();
    in.item_rows = item_rows.data();
    in.num_item_rows = rows_item;
    in.cat_rows = cat_rows.data();
    in.num_cat_rows = rows_cat;
    in.labels = labels.data();
    return in;
  }
};

struct Pass {
  float loss = 0;
  std::vector<float> logits, dense_grads, d_item, d_cat;
};

Pass TrainingPass(models::CtrModel<float>& m, const kernels::Context& ctx, const Batch& b) {
  Pass p;
  const auto in = b.Inputs();
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.logits.assign(m.logits(), m.logits() + b.B);
  p.d_item.assign(b.rows_item * b.D, NAN);  // poisoned: every row must be written
  p.d_cat.assign(b.rows_cat * b.D, NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_item.data(), p.d_cat.data()));
  p.dense_grads.assign(m.params().grads(), m.params().grads() + m.params().size());
  return p;
}

// Loss, logits and every pulled row's gradient of a CUDA pass against the CPU pass (the dense
// gradients are compared by each test, tensor by tensor).
void ExpectPassMatches(const Pass& got, const Pass& want) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
  EXPECT_TRUE(AllClose(got.logits, want.logits, kElementwise));
  EXPECT_LT(
      RelativeL2(got.d_item.data(), want.d_item.data(), static_cast<int64_t>(want.d_item.size())),
      kMaxRelL2);
  EXPECT_LT(
      RelativeL2(got.d_cat.data(), want.d_cat.data(), static_cast<int64_t>(want.d_cat.size())),
      kMaxRelL2);
  for (float g : got.d_item) ASSERT_FALSE(std::isnan(g)) << "an item row gradient unwritten";
  for (float g : got.d_cat) ASSERT_FALSE(std::isnan(g)) << "a category row gradient unwritten";
}

TEST_F(DinGpu, ForwardBackwardMatchCpu_PreluDice_RawSoftmax) {
  for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice}) {
    for (bool softmax : {false, true}) {
      SCOPED_TRACE(std::string(models::MlpActivationName(act)) + (softmax ? " softmax" : " raw"));
      DinOptions o;
      o.embedding_dim = 18;
      o.max_len = 50;
      o.max_batch = 80;
      o.activation = act;
      o.attention_softmax = softmax;
      o.seed = 3;
      auto cpu = Din<float>::Create(o);
      ASSERT_OK(cpu.status());
      o.device = kernels::Device::kCuda;
      auto gpu = Din<float>::Create(o);
      ASSERT_OK(gpu.status());
      ASSERT_EQ((*cpu)->params().size(), (*gpu)->params().size());
      ASSERT_TRUE(AllClose((*gpu)->params().values(), (*cpu)->params().values(),
                           (*cpu)->params().size(), {0, 0}))
          << "initial weights differ";

      kernels::Context cpu_ctx, gpu_ctx;
      gpu_ctx.device = kernels::Device::kCuda;
      // A batch below max_batch, then a smaller one through the same models (stale data of the
      // larger batch, or sizes taken from max_batch instead of the batch, would show).
      for (int64_t rows : {int64_t{67}, int64_t{9}}) {
        SCOPED_TRACE("batch " + std::to_string(rows));
        const Batch b(rows, 50, 18, 41 + rows);
        const Pass want = TrainingPass(**cpu, cpu_ctx, b);
        const Pass got = TrainingPass(**gpu, gpu_ctx, b);
        ExpectPassMatches(got, want);
        // Tensor by tensor, so that a small tensor left unwritten cannot hide in the total norm;
        // an absolute bound where the gradient is (near) zero, e.g. the last bias under softmax.
        for (const auto& e : (*cpu)->params().entries()) {
          const float* g = got.dense_grads.data() + e.offset;
          const float* w = want.dense_grads.data() + e.offset;
          double max_abs = 0;
          for (int64_t i = 0; i < e.size; ++i) max_abs = std::max<double>(max_abs, std::fabs(w[i]));
          if (max_abs < 1e-6) {
            EXPECT_TRUE(AllClose(g, w, e.size, {1e-6, 0})) << e.name;
          } else {
            EXPECT_LT(RelativeL2(g, w, e.size), kMaxRelL2) << e.name;
          }
        }
      }
      const Batch b(67, 50, 18, 108);

      // The host weights are the reference: change them on both (as the dense optimizer does)
      // and score in inference mode; Dice also reads the running statistics its training pass
      // brought back to the host.
      for (auto* m : {cpu->get(), gpu->get()}) {
        float* w = m->params().values();
        for (int64_t i = 0; i < m->params().size(); ++i) w[i] *= 0.9f;
      }
      auto in = b.Inputs();
      in.labels = nullptr;
      ASSERT_OK((*cpu)->Forward(cpu_ctx, in, /*training=*/false, nullptr));
      ASSERT_OK((*gpu)->Forward(gpu_ctx, in, /*training=*/false, nullptr));
      EXPECT_TRUE(AllClose((*gpu)->logits(), (*cpu)->logits(), b.B, kElementwise));
      auto cpu_state = (*cpu)->state(), gpu_state = (*gpu)->state();
      ASSERT_EQ(cpu_state.size(), gpu_state.size());
      for (size_t i = 0; i < cpu_state.size(); ++i)
        EXPECT_TRUE(AllClose(gpu_state[i].data, cpu_state[i].data, cpu_state[i].size, kElementwise))
            << cpu_state[i].name;
    }
  }
}

// The pooled baseline: sum and mean pooling, two batch sizes, every dense tensor and row.
TEST_F(DinGpu, PooledForwardBackwardMatchCpu_SumMean) {
  for (models::HistoryPooling pooling :
       {models::HistoryPooling::kSum, models::HistoryPooling::kMean}) {
    SCOPED_TRACE(models::HistoryPoolingName(pooling));
    models::PooledOptions o;
    o.embedding_dim = 18;
    o.max_len = 50;
    o.max_batch = 80;
    o.pooling = pooling;
    o.activation = MlpActivation::kDice;
    o.seed = 5;
    auto cpu = models::PooledModel<float>::Create(o);
    ASSERT_OK(cpu.status());
    o.device = kernels::Device::kCuda;
    auto gpu = models::PooledModel<float>::Create(o);
    ASSERT_OK(gpu.status());
    kernels::Context cpu_ctx, gpu_ctx;
    gpu_ctx.device = kernels::Device::kCuda;
    for (int64_t rows : {int64_t{67}, int64_t{9}}) {
      SCOPED_TRACE("batch " + std::to_string(rows));
      const Batch b(rows, 50, 18, 77 + rows);
      const Pass want = TrainingPass(**cpu, cpu_ctx, b);
      const Pass got = TrainingPass(**gpu, gpu_ctx, b);
      ExpectPassMatches(got, want);
      for (const auto& e : (*cpu)->params().entries())
        EXPECT_LT(RelativeL2(got.dense_grads.data() + e.offset, want.dense_grads.data() + e.offset,
                             e.size),
                  kMaxRelL2)
            << e.name;
    }
  }
}

TEST_F(DinGpu, RejectsAContextOfAnotherDevice) {
  DinOptions o;
  o.max_batch = 4;
  o.max_len = 5;
  o.device = kernels::Device::kCuda;
  auto gpu = Din<float>::Create(o);
  ASSERT_OK(gpu.status());
  const Batch b(4, 5, 18, 7);
  EXPECT_EQ((*gpu)->Forward(kernels::Context{}, b.Inputs(), true, nullptr).code(),
            StatusCode::kInvalidArgument);
}

// The Trainer drives a CUDA DIN exactly as a CPU one (pinned pulls, host dense optimizer, pushes):
// 30 Adam steps on the synthetic stream give the same losses, weights and predictions within
// float tolerance.
// The Trainer drives every CTR model that runs on CUDA the same way on both devices.
TEST_F(DinGpu, TrainerLossesMatchCpu_30Steps_DinDienPooledMind) {
  SyntheticOptions so;
  so.num_items = 5000;
  so.num_categories = 20;
  so.seq_len = 10;
  so.seed = 3;
  auto gen = SyntheticBatches::Create(so);
  ASSERT_OK(gen.status());
  for (ModelKind kind : {ModelKind::kDin, ModelKind::kDien, ModelKind::kPooled, ModelKind::kMind}) {
    SCOPED_TRACE(ModelKindName(kind));
    TrainerOptions opt = testing_util::SmallTrainerOptions(128, 10);
    opt.model.kind = kind;
    opt.model.embedding_dim = 8;
    const testing_util::TrainedCtr cpu = testing_util::TrainCtrSteps(**gen, opt, 30, 128);
    opt.model.device = kernels::Device::kCuda;
    const testing_util::TrainedCtr gpu = testing_util::TrainCtrSteps(**gen, opt, 30, 128);
    ASSERT_EQ(gpu.losses.size(), 30u);
    // Rounding differences compound over steps through Adam: a loose relative bound that a
    // broken path (a missing upload, gradients left on the device) misses by far.
    EXPECT_TRUE(AllClose(gpu.losses, cpu.losses, {1e-4, 1e-2}));
    EXPECT_LT(RelativeL2(gpu.weights_and_probs.data(), cpu.weights_and_probs.data(),
                         static_cast<int64_t>(cpu.weights_and_probs.size())),
              1e-2);
    EXPECT_NE(gpu.losses.front(), gpu.losses.back());
  }
}

}  // namespace
}  // namespace ips
