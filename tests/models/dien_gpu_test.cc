// DIEN on CUDA (device = kCuda) against DIEN on the CPU, both float: the same weights
// (initialised on the host either way), fresh random inputs with lengths 0, 1 and max, the GRU
// and the LSTM extractor, PReLU and Dice, the auxiliary loss and the attention on and off.
// Forward (loss, click and auxiliary losses, logits), backward (every dense gradient, every
// pulled row's gradient into NaN-poisoned outputs), two batch sizes through the same models, and
// an inference forward after the host weights changed (the upload path). Label `gpu`: skipped
// without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "kernels/context.h"
#include "models/dien.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips {
namespace {

using models::Dien;
using models::DienCell;
using models::DienOptions;
using models::MlpActivation;
using testing::AllClose;
using testing::RelativeL2;

// Float on both devices; the CUDA kernels sum in other orders (atomics, cuBLAS), so compare with
// the relative L2 error METHOD.md uses for float32 paths, plus a loose element-wise bound.
constexpr double kMaxRelL2 = 1e-4;
constexpr testing::Tolerance kElementwise{1e-4, 2e-3};

class DienGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
};

// B rows over T steps with 2*B*T + B indices (history, targets, auxiliary negatives).
struct Batch {
  int64_t B, T, D, rows_item, rows_cat;
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index, cat_index;
  std::vector<float> item_rows, cat_rows, labels;

  Batch(int64_t b, int64_t t, int64_t d, uint64_t seed)
      : B(b), T(t), D(d), rows_item(4 * b), rows_cat(7) {
    Rng rng(seed);
    lengths.resize(B);
    for (int64_t i = 0; i < B; ++i)
      lengths[i] = static_cast<int32_t>(rng.UniformInt(static_cast<uint64_t>(T + 1)));
    lengths[0] = 0;
    lengths[1] = 1;
    lengths[2] = static_cast<int32_t>(T);
    const int64_t n = 2 * B * T + B;
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
  float loss = 0, click = 0, aux = 0;
  int64_t pairs = 0;
  std::vector<float> logits, dense_grads, d_item, d_cat;
};

Pass TrainingPass(Dien<float>& m, const kernels::Context& ctx, const Batch& b) {
  Pass p;
  const auto in = b.Inputs();
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.click = m.click_loss();
  p.aux = m.aux_loss();
  p.pairs = m.aux_pairs();
  p.logits.assign(m.logits(), m.logits() + b.B);
  p.d_item.assign(b.rows_item * b.D, NAN);  // poisoned: every row must be written
  p.d_cat.assign(b.rows_cat * b.D, NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_item.data(), p.d_cat.data()));
  p.dense_grads.assign(m.params().grads(), m.params().grads() + m.params().size());
  return p;
}

void ExpectPassMatches(const Pass& got, const Pass& want, const models::DenseParams<float>& p) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
  EXPECT_NEAR(got.click, want.click, 1e-5 + 1e-4 * std::fabs(want.click));
  EXPECT_NEAR(got.aux, want.aux, 1e-5 + 1e-4 * std::fabs(want.aux));
  EXPECT_EQ(got.pairs, want.pairs);
  EXPECT_TRUE(AllClose(got.logits, want.logits, kElementwise));
  for (float g : got.d_item) ASSERT_FALSE(std::isnan(g)) << "an item row gradient unwritten";
  for (float g : got.d_cat) ASSERT_FALSE(std::isnan(g)) << "a category row gradient unwritten";
  EXPECT_LT(
      RelativeL2(got.d_item.data(), want.d_item.data(), static_cast<int64_t>(want.d_item.size())),
      kMaxRelL2);
  EXPECT_LT(
      RelativeL2(got.d_cat.data(), want.d_cat.data(), static_cast<int64_t>(want.d_cat.size())),
      kMaxRelL2);
  // Tensor by tensor, so that a small tensor left unwritten cannot hide in the total norm; an
  // absolute bound where the gradient is (near) zero (ablated parts).
  for (const auto& e : p.entries()) {
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

// Builds the CPU and CUDA models of `o`, runs two training passes (a batch below max_batch, then
// a smaller one) on both, then an inference forward after the host weights changed.
void CompareDevices(DienOptions o) {
  auto cpu = Dien<float>::Create(o);
  ASSERT_OK(cpu.status());
  o.device = kernels::Device::kCuda;
  auto gpu = Dien<float>::Create(o);
  ASSERT_OK(gpu.status());
  ASSERT_EQ((*gpu)->device(), kernels::Device::kCuda);
  ASSERT_EQ((*cpu)->params().size(), (*gpu)->params().size());
  ASSERT_TRUE(AllClose((*gpu)->params().values(), (*cpu)->params().values(),
                       (*cpu)->params().size(), {0, 0}))
      << "initial weights differ";
  kernels::Context cpu_ctx, gpu_ctx;
  gpu_ctx.device = kernels::Device::kCuda;
  // Stale data of the larger batch, or sizes taken from max_batch instead of the batch, would
  // show in the second one.
  for (int64_t rows : {int64_t{67}, int64_t{9}}) {
    SCOPED_TRACE("batch " + std::to_string(rows));
    const Batch b(rows, o.max_len, o.embedding_dim, 41 + rows);
    const Pass want = TrainingPass(**cpu, cpu_ctx, b);
    const Pass got = TrainingPass(**gpu, gpu_ctx, b);
    ExpectPassMatches(got, want, (*cpu)->params());
  }
  // The host weights are the reference: change them on both (as the dense optimizer does) and
  // score in inference mode (only B*T + B indices: no negatives); Dice also reads the running
  // statistics its training passes brought back to the host.
  for (auto* m : {cpu->get(), gpu->get()}) {
    float* w = m->params().values();
    for (int64_t i = 0; i < m->params().size(); ++i) w[i] *= 0.9f;
  }
  Batch b(67, o.max_len, o.embedding_dim, 108);
  b.item_index.resize(b.B * b.T + b.B);
  b.cat_index.resize(b.B * b.T + b.B);
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

DienOptions PeerOptions(DienCell cell, MlpActivation act) {
  DienOptions o;
  o.embedding_dim = 18;
  o.max_len = 50;
  o.max_batch = 80;
  o.cell = cell;
  o.activation = act;
  o.seed = 3;
  return o;
}

TEST_F(DienGpu, ForwardBackwardMatchCpu_GruLstm_PreluDice) {
  for (DienCell cell : {DienCell::kGru, DienCell::kLstm})
    for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice}) {
      SCOPED_TRACE(std::string(models::DienCellName(cell)) + " " + models::MlpActivationName(act));
      CompareDevices(PeerOptions(cell, act));
    }
}

// The ablations take other branches on the device (the valid-step mask instead of the attention,
// zeroed gradients, no negatives staged).
TEST_F(DienGpu, ForwardBackwardMatchCpu_AuxOffAttentionOff) {
  for (bool aux_off : {false, true})
    for (bool att_off : {false, true}) {
      if (!aux_off && !att_off) continue;  // the test above
      SCOPED_TRACE(std::string(aux_off ? "no-aux" : "aux") + (att_off ? " no-attention" : ""));
      DienOptions o = PeerOptions(DienCell::kGru, MlpActivation::kDice);
      o.aux_loss_disabled = aux_off;
      o.attention_disabled = att_off;
      CompareDevices(o);
    }
}

TEST_F(DienGpu, RejectsAContextOfAnotherDevice) {
  DienOptions o;
  o.max_batch = 4;
  o.max_len = 5;
  o.device = kernels::Device::kCuda;
  auto gpu = Dien<float>::Create(o);
  ASSERT_OK(gpu.status());
  const Batch b(4, 5, 18, 7);
  EXPECT_EQ((*gpu)->Forward(kernels::Context{}, b.Inputs(), true, nullptr).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips
