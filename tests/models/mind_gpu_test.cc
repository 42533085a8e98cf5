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
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips {
namespace {

using models::Mind;
using models::MindOptions;
using testing::AllClose;
using testing::RelativeL2;

// Float on both devices; the CUDA kernels sum in other orders (warp sums, atomics, cuBLAS), so
// compare with the relative L2 error used for float32 paths, plus a loose element-wise bound.
constexpr double kMaxRelL2 = 1e-4;
constexpr testing::Tolerance kElementwise{1e-4, 2e-3};

class MindGpu : public ::testing::Test {
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

  // num_item_rows = 0: 3 * b pulled item rows; more than a staged model's staging buffers hold
  // (max_batch * (t + 1)) makes it compact them, as for the retrieval evaluation's whole table.
  Batch(int64_t b, int64_t t, int64_t d, uint64_t seed, int64_t num_item_rows = 0)
      : B(b), T(t), D(d), rows_item(num_item_rows > 0 ? num_item_rows : 3 * b), rows_cat(7) {
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
  std::vector<float> logits, user_vectors, dense_grads, d_item, d_cat;
};

Pass TrainingPass(Mind<float>& m, const kernels::Context& ctx, const Batch& b) {
  Pass p;
  const auto in = b.Inputs();
  p.loss = NAN;
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.logits.assign(m.logits(), m.logits() + b.B);
  p.user_vectors.assign(m.user_vectors(),
                        m.user_vectors() + b.B * m.num_user_vectors() * m.vector_dim());
  p.d_item.assign(b.rows_item * b.D, NAN);  // poisoned: every row must be written
  p.d_cat.assign(b.rows_cat * b.D, NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_item.data(), p.d_cat.data()));
  p.dense_grads.assign(m.params().grads(), m.params().grads() + m.params().size());
  return p;
}

double Rel(const std::vector<float>& got, const std::vector<float>& want) {
  return RelativeL2(got.data(), want.data(), static_cast<int64_t>(want.size()));
}

// Loss, logits, user vectors and every pulled row's gradient of a CUDA pass against the CPU pass
// (the dense gradients are compared tensor by tensor by the test).
void ExpectPassMatches(const Pass& got, const Pass& want) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
  EXPECT_TRUE(AllClose(got.logits, want.logits, kElementwise));
  EXPECT_LT(Rel(got.user_vectors, want.user_vectors), kMaxRelL2);
  EXPECT_LT(Rel(got.d_item, want.d_item), kMaxRelL2);
  // Without categories both are exactly zero (RelativeL2 of zeros is 0).
  EXPECT_LT(Rel(got.d_cat, want.d_cat), kMaxRelL2);
  for (float g : got.d_item) ASSERT_FALSE(std::isnan(g)) << "an item row gradient unwritten";
  for (float g : got.d_cat) ASSERT_FALSE(std::isnan(g)) << "a category row gradient unwritten";
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
      ASSERT_EQ((*cpu)->params().size(), (*gpu)->params().size());
      ASSERT_TRUE(AllClose((*gpu)->params().values(), (*cpu)->params().values(),
                           (*cpu)->params().size(), {0, 0}))
          << "initial weights differ";

      kernels::Context cpu_ctx, gpu_ctx;
      gpu_ctx.device = kernels::Device::kCuda;
      // A batch below max_batch, then a smaller one through the same models (stale data of the
      // larger batch, or sizes taken from max_batch instead of the batch, would show).
      // Then one over a pulled item table larger than the staging buffers (80 * 51 rows).
      for (int64_t rows : {int64_t{67}, int64_t{9}, int64_t{-9}}) {
        SCOPED_TRACE("batch " + std::to_string(rows));
        const Batch b(std::abs(rows), 50, 18, 41 + rows, rows < 0 ? 5000 : 0);
        const Pass want = TrainingPass(**cpu, cpu_ctx, b);
        const Pass got = TrainingPass(**gpu, gpu_ctx, b);
        ExpectPassMatches(got, want);
        // Tensor by tensor, so that a small tensor left unwritten cannot hide in the total norm.
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

      // The host weights and routing logits are the reference: change them on both (as the
      // dense optimizer and a checkpoint restore do) and score in inference mode.
      for (Mind<float>* m : {cpu->get(), gpu->get()}) {
        float* w = m->params().values();
        for (int64_t i = 0; i < m->params().size(); ++i) w[i] *= 0.9f;
        const auto st = m->state();
        ASSERT_EQ(st.size(), 1u);
        for (int64_t j = 0; j < st[0].size; ++j) st[0].data[j] = -st[0].data[j];
      }
      const Batch b(67, 50, 18, 108, /*num_item_rows=*/5000);
      auto in = b.Inputs();
      in.labels = nullptr;
      ASSERT_OK((*cpu)->Forward(cpu_ctx, in, /*training=*/false, nullptr));
      ASSERT_OK((*gpu)->Forward(gpu_ctx, in, /*training=*/false, nullptr));
      EXPECT_TRUE(AllClose((*gpu)->logits(), (*cpu)->logits(), b.B, kElementwise));
      const int64_t n = b.B * 4 * 18;
      EXPECT_LT(RelativeL2((*gpu)->user_vectors(), (*cpu)->user_vectors(), n), kMaxRelL2);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_FALSE(std::isnan((*gpu)->user_vectors()[i])) << "user vector " << i;
    }
  }
}

TEST_F(MindGpu, RejectsAContextOfAnotherDevice) {
  MindOptions o;
  o.max_batch = 4;
  o.max_len = 5;
  o.device = kernels::Device::kCuda;
  auto gpu = Mind<float>::Create(o);
  ASSERT_OK(gpu.status());
  const Batch b(4, 5, 18, 7);
  EXPECT_EQ((*gpu)->Forward(kernels::Context{}, b.Inputs(), true, nullptr).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips
