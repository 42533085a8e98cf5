// SASRec and BST on CUDA (device = kCuda) against the same models on the CPU with
// fast_cpu_path = false (kernels/ throughout, the function the CUDA path computes): the same
// weights (initialised on the host either way), fresh random inputs with lengths 0, 1 and max,
// batches below max_batch and smaller, dropout off and on (the masks are the same functions of
// the seed on both devices). Forward (loss, user vectors / logits), backward (every dense
// gradient, every pulled row's gradient, poisoned so that an unwritten row fails), and an
// inference forward after the host weights changed (the upload path). Label `gpu`: skipped
// without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "kernels/attention.h"
#include "kernels/context.h"
#include "models/bst.h"
#include "models/sasrec.h"
#include "tests/models/gpu_test_util.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"
#include "worker/synthetic_batches.h"

namespace ips {
namespace {

using models::Bst;
using models::BstOptions;
using models::BstPooling;
using models::MlpActivation;
using models::Sasrec;
using models::SasrecOptions;
using testing_util::RandomCtrBatch;
using testing_util::RandomSeqBatch;

class TransformerGpu : public testing_util::CudaTest {};

TEST_F(TransformerGpu, SasrecMatchesCpu_DropoutOffOn_TwoLayouts) {
  for (double dropout : {0.0, 0.2}) {
    for (auto layout : {models::BlockLayout::kPreLn, models::BlockLayout::kQueryNorm}) {
      SCOPED_TRACE("dropout " + std::to_string(dropout) +
                   (layout == models::BlockLayout::kPreLn ? " preln" : " querynorm"));
      SasrecOptions o;
      o.embedding_dim = 32;
      o.max_len = 20;
      o.max_batch = 40;
      o.num_blocks = 2;
      o.num_heads = 2;
      o.dropout = dropout;
      o.layout = layout;
      o.seed = 9;
      o.fast_cpu_path = false;
      testing_util::ExpectCudaMatchesCpu<Sasrec<float>>(
          o, {33, 7}, 100,
          [&o](int64_t B, uint64_t seed) {
            return RandomSeqBatch(B, o.max_len, o.embedding_dim, seed);
          },
          [](Sasrec<float>& cpu, Sasrec<float>& gpu) {
            EXPECT_EQ(cpu.dropout_step(), gpu.dropout_step());
          });
    }
  }
}

// ---- BST ------------------------------------------------------------------------------------

// B rows of T steps over 2B + 5 item rows.
RandomCtrBatch BstBatch(int64_t b, int64_t t, int64_t d, uint64_t seed) {
  return RandomCtrBatch(b, t, d, seed, 2 * b + 5);
}

TEST_F(TransformerGpu, BstMatchesCpu_Poolings_PreluDice_DropoutOffOn) {
  for (double dropout : {0.0, 0.2}) {
    for (BstPooling pooling : {BstPooling::kFlatten, BstPooling::kMeanWithTarget}) {
      for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice}) {
        SCOPED_TRACE("dropout " + std::to_string(dropout) +
                     (pooling == BstPooling::kFlatten ? " flatten " : " mean ") +
                     models::MlpActivationName(act));
        BstOptions o;
        o.embedding_dim = 8;  // E = 16
        o.max_len = 12;
        o.max_batch = 40;
        o.num_heads = 2;
        o.dropout = dropout;
        o.mlp_hidden = {32, 16};
        o.activation = act;
        o.pooling = pooling;
        o.seed = 11;
        o.fast_cpu_path = false;
        // Dice's running statistics come back to the host after a training forward.
        testing_util::ExpectCudaMatchesCpu<Bst<float>>(
            o, {33, 7}, 200, [&o](int64_t B, uint64_t seed) {
              return BstBatch(B, o.max_len, o.embedding_dim, seed);
            });
      }
    }
  }
}

TEST_F(TransformerGpu, RejectsAContextOfAnotherDevice) {
  SasrecOptions o;
  o.embedding_dim = 8;
  o.max_len = 6;
  o.max_batch = 4;
  testing_util::ExpectCudaModelRefusesCpuContext<Sasrec<float>>(
      o, RandomSeqBatch(4, 6, 8, 1).Inputs());
}

// A sequence too long for the CUDA attention's shared memory is refused when the model is
// created (naming max_len), not at its first backward; the usual lengths are accepted.
TEST_F(TransformerGpu, TooLongSequencesAreRefusedAtCreate) {
  EXPECT_OK(kernels::MhaCudaSupports(50, 50));
  EXPECT_EQ(kernels::MhaCudaSupports(1025, 8).code(), StatusCode::kUnimplemented);
  SasrecOptions o;
  o.embedding_dim = 50;
  o.max_batch = 4;
  o.fast_cpu_path = false;
  o.device = kernels::Device::kCuda;
  o.max_len = 50;
  EXPECT_OK(Sasrec<float>::Create(o).status());
  o.max_len = 400;  // 2*T*dh + 2*T*T floats = 1.4 MB of shared memory per block
  const Status s = Sasrec<float>::Create(o).status();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s;
  EXPECT_NE(s.ToString().find("max_len 400"), std::string::npos) << s;
}

// The SeqTrainer drives a CUDA SASRec as a CPU one (kernels path, dropout on): 30 Adam steps on
// the synthetic stream give the same losses, weights and scores within float tolerance.
TEST_F(TransformerGpu, SeqTrainerSasrecLossesMatchCpu_30Steps) {
  SyntheticOptions so;
  so.num_items = 3000;
  so.num_categories = 10;
  so.seq_len = 20;
  so.seed = 3;
  auto gen = SyntheticBatches::Create(so);
  ASSERT_OK(gen.status());
  SasrecOptions o;
  o.embedding_dim = 16;
  o.max_len = 20;
  o.max_batch = 64;
  o.num_heads = 2;
  o.dropout = 0.2;
  o.seed = 5;
  o.fast_cpu_path = false;
  const testing_util::TrainedRun cpu =
      testing_util::TrainSeqSteps<Sasrec<float>>(**gen, o, 3001, 30, 64);
  o.device = kernels::Device::kCuda;
  const testing_util::TrainedRun gpu =
      testing_util::TrainSeqSteps<Sasrec<float>>(**gen, o, 3001, 30, 64);
  testing_util::ExpectCudaRunMatchesCpu(gpu, cpu, 30);
}

}  // namespace
}  // namespace ips
