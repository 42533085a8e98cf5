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
using testing_util::RandomSeqBatch;
using testing_util::RelL2;
using testing_util::SeqPass;
using testing_util::SeqTrainingPass;

class Gru4RecGpu : public testing_util::CudaTest {};

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
      testing_util::ExpectCudaMatchesCpu<Gru4Rec<float>>(
          o, {67, 9}, 100, [&o](int64_t B, uint64_t seed) {
            return RandomSeqBatch(B, o.max_len, o.embedding_dim, seed);
          });
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
  const RandomSeqBatch batch(4, 6, 8, 1);
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
  const testing_util::TrainedSeq cpu =
      testing_util::TrainSeqSteps<models::Gru4Rec<float>>(**gen, o, 3001, 30, 64);
  o.device = kernels::Device::kCuda;
  const testing_util::TrainedSeq gpu =
      testing_util::TrainSeqSteps<models::Gru4Rec<float>>(**gen, o, 3001, 30, 64);
  ASSERT_EQ(gpu.losses.size(), 30u);
  // Rounding differences compound over steps through Adam: a loose relative bound that a broken
  // path (a missing upload, gradients left on the device) misses by far.
  EXPECT_TRUE(AllClose(gpu.losses, cpu.losses, {1e-4, 1e-2}));
  EXPECT_LT(RelL2(gpu.weights_and_scores, cpu.weights_and_scores), 1e-2);
  EXPECT_NE(gpu.losses.front(), gpu.losses.back());
}

}  // namespace
}  // namespace ips
