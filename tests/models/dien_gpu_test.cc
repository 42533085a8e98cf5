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
#include "tests/models/gpu_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips {
namespace {

using models::Dien;
using models::DienCell;
using models::DienOptions;
using models::MlpActivation;
using testing_util::CtrPass;
using testing_util::CtrTrainingPass;
using testing_util::RandomCtrBatch;

class DienGpu : public testing_util::CudaTest {};

// B rows over T steps with 2*B*T + B indices (history, targets, auxiliary negatives).
RandomCtrBatch Batch(int64_t b, int64_t t, int64_t d, uint64_t seed) {
  return RandomCtrBatch(b, t, d, seed, 4 * b, /*aux_negatives=*/true);
}

// A training pass and DIEN's own outputs: the click and auxiliary losses and the pair count.
struct DienPass {
  CtrPass pass;
  float click = 0, aux = 0;
  int64_t pairs = 0;
};

DienPass TrainingPass(Dien<float>& m, const kernels::Context& ctx, const RandomCtrBatch& b) {
  DienPass p;
  p.pass = CtrTrainingPass(m, ctx, b);
  p.click = m.click_loss();
  p.aux = m.aux_loss();
  p.pairs = m.aux_pairs();
  return p;
}

void ExpectPassMatches(const DienPass& got, const DienPass& want,
                       const models::DenseParams<float>& layout) {
  testing_util::ExpectCtrPassMatches(got.pass, want.pass, layout);
  EXPECT_NEAR(got.click, want.click, 1e-5 + 1e-4 * std::fabs(want.click));
  EXPECT_NEAR(got.aux, want.aux, 1e-5 + 1e-4 * std::fabs(want.aux));
  EXPECT_EQ(got.pairs, want.pairs);
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
  testing_util::ExpectSameInitialWeights((*cpu)->params(), (*gpu)->params());
  kernels::Context cpu_ctx, gpu_ctx;
  gpu_ctx.device = kernels::Device::kCuda;
  // Stale data of the larger batch, or sizes taken from max_batch instead of the batch, would
  // show in the second one.
  for (int64_t rows : {int64_t{67}, int64_t{9}}) {
    SCOPED_TRACE("batch " + std::to_string(rows));
    const RandomCtrBatch b = Batch(rows, o.max_len, o.embedding_dim, 41 + rows);
    const DienPass want = TrainingPass(**cpu, cpu_ctx, b);
    const DienPass got = TrainingPass(**gpu, gpu_ctx, b);
    ExpectPassMatches(got, want, (*cpu)->params());
  }
  // Inference with only B*T + B indices: no negatives.
  RandomCtrBatch b = Batch(67, o.max_len, o.embedding_dim, 108);
  b.item_index.resize(b.B * b.T + b.B);
  b.cat_index.resize(b.B * b.T + b.B);
  testing_util::ExpectInferenceMatchesAfterWeightChange(**cpu, **gpu, b.Inputs());
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
  testing_util::ExpectCudaModelRefusesCpuContext<Dien<float>>(o, Batch(4, 5, 18, 7).Inputs());
}

}  // namespace
}  // namespace ips
