// MIND on CUDA (device = kCuda) against MIND on the CPU (float both): the same weights and routing
// logits (initialised on the host either way), fresh random inputs with lengths 0, 1 and max, in
// both item spaces and with both user layers. Forward (loss, logits, user vectors), backward
// (every dense gradient, every pulled row's gradient, outputs poisoned with NaN), a batch below
// max_batch then a smaller one through the same models, pulled tables larger than the staging
// buffers (compacted), and an inference forward after the host weights and routing logits changed
// (the upload paths). Label `gpu`: skipped without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "kernels/context.h"
#include "models/mind.h"
#include "tests/models/gpu_test_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips {
namespace {

using models::Mind;
using models::MindOptions;
using testing_util::CtrPass;
using testing_util::CtrTrainingPass;
using testing_util::RandomCtrBatch;

class MindGpu : public testing_util::CudaTest {};

// num_item_rows = 0: 3 * b pulled item rows; more than a staged model's staging buffers hold
// (max_batch * (t + 1)) makes it compact them, as for the retrieval evaluation's whole table.
RandomCtrBatch Batch(int64_t b, int64_t t, int64_t d, uint64_t seed, int64_t num_item_rows = 0) {
  return RandomCtrBatch(b, t, d, seed, num_item_rows > 0 ? num_item_rows : 3 * b);
}

TEST_F(MindGpu, ForwardBackwardMatchCpu_Categories_UserRelu) {
  for (bool cats : {true, false}) {
    for (bool relu : {false, true}) {
      SCOPED_TRACE(std::string(cats ? "item + category" : "item only") +
                   (relu ? ", ReLU" : ", linear"));
      MindOptions o;
      o.embedding_dim = 18;
      o.capsule_dim = 16;  // != D, so a transposed S or W cannot pass
      o.max_len = 50;
      o.max_batch = 80;
      o.num_interests = 4;
      o.routing_iterations = 3;
      o.use_categories = cats;
      o.user_relu = relu;
      o.seed = 3;
      auto cpu = Mind<float>::Create(o);
      ASSERT_OK(cpu.status());
      o.device = kernels::Device::kCuda;
      auto gpu = Mind<float>::Create(o);
      ASSERT_OK(gpu.status());
      EXPECT_EQ((*gpu)->device(), kernels::Device::kCuda);
      testing_util::ExpectSameInitialWeights((*cpu)->params(), (*gpu)->params());

      kernels::Context cpu_ctx, gpu_ctx;
      gpu_ctx.device = kernels::Device::kCuda;
      // A batch below max_batch, then a smaller one through the same models (stale data of the
      // larger batch, or sizes taken from max_batch instead of the batch, would show).
      // Then one over a pulled item table larger than the staging buffers (80 * 51 rows).
      for (int64_t rows : {int64_t{67}, int64_t{9}, int64_t{-9}}) {
        SCOPED_TRACE("batch " + std::to_string(rows));
        const RandomCtrBatch b = Batch(std::abs(rows), 50, 18, 41 + rows, rows < 0 ? 5000 : 0);
        const CtrPass want = CtrTrainingPass(**cpu, cpu_ctx, b);
        const CtrPass got = CtrTrainingPass(**gpu, gpu_ctx, b);
        testing_util::ExpectCtrPassMatches(got, want, (*cpu)->params());
      }

      // The routing logits' host copy is the reference too: change it on both (as a checkpoint
      // restore does) before the inference forward, which also sees the weights changed.
      for (Mind<float>* m : {cpu->get(), gpu->get()}) {
        const auto st = m->state();
        ASSERT_EQ(st.size(), 1u);
        for (int64_t j = 0; j < st[0].size; ++j) st[0].data[j] = -st[0].data[j];
      }
      testing_util::ExpectInferenceMatchesAfterWeightChange(
          **cpu, **gpu, Batch(67, 50, 18, 108, /*num_item_rows=*/5000).Inputs());
    }
  }
}

TEST_F(MindGpu, RejectsAContextOfAnotherDevice) {
  MindOptions o;
  o.max_batch = 4;
  o.max_len = 5;
  testing_util::ExpectCudaModelRefusesCpuContext<Mind<float>>(o, Batch(4, 5, 18, 7).Inputs());
}

}  // namespace
}  // namespace ips
