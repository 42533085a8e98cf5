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
#include "tests/models/gpu_test_util.h"
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
using testing_util::RandomCtrBatch;

class DinGpu : public testing_util::CudaTest {};

// B rows of T steps over 3B item rows: DIN's and the pooled model's inputs.
RandomCtrBatch Batch(int64_t b, int64_t t, int64_t d, uint64_t seed) {
  return RandomCtrBatch(b, t, d, seed, 3 * b);
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
      testing_util::ExpectCudaMatchesCpu<Din<float>>(
          o, {67, 9}, 41, [](int64_t B, uint64_t seed) { return Batch(B, 50, 18, seed); });
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
    testing_util::ExpectCudaMatchesCpu<models::PooledModel<float>>(
        o, {67, 9}, 77, [](int64_t B, uint64_t seed) { return Batch(B, 50, 18, seed); });
  }
}

TEST_F(DinGpu, RejectsAContextOfAnotherDevice) {
  DinOptions o;
  o.max_batch = 4;
  o.max_len = 5;
  testing_util::ExpectCudaModelRefusesCpuContext<Din<float>>(o, Batch(4, 5, 18, 7).Inputs());
}

// The Trainer drives every CTR model that runs on CUDA exactly as a CPU one (pinned pulls, host
// dense optimizer, pushes): 30 Adam steps on the synthetic stream give the same losses, weights
// and predictions within float tolerance.
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
    const testing_util::TrainedRun cpu = testing_util::TrainCtrSteps(**gen, opt, 30, 128);
    opt.model.device = kernels::Device::kCuda;
    const testing_util::TrainedRun gpu = testing_util::TrainCtrSteps(**gen, opt, 30, 128);
    testing_util::ExpectCudaRunMatchesCpu(gpu, cpu, 30);
  }
}

}  // namespace
}  // namespace ips
