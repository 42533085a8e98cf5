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
using testing_util::RandomSeqBatch;

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
  testing_util::ExpectCudaModelRefusesCpuContext<Gru4Rec<float>>(
      o, RandomSeqBatch(4, 6, 8, 1).Inputs());
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
  const testing_util::TrainedRun cpu =
      testing_util::TrainSeqSteps<models::Gru4Rec<float>>(**gen, o, 3001, 30, 64);
  o.device = kernels::Device::kCuda;
  const testing_util::TrainedRun gpu =
      testing_util::TrainSeqSteps<models::Gru4Rec<float>>(**gen, o, 3001, 30, 64);
  testing_util::ExpectCudaRunMatchesCpu(gpu, cpu, 30);
}

}  // namespace
}  // namespace ips
