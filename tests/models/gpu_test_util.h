// Helpers shared by the models' CUDA-vs-CPU tests (label `gpu`): a fixture that skips without a
// device, random CTR and sequence batches with lengths 0, 1 and max, one training pass captured
// with poisoned gradient outputs, and the comparisons every model's test makes (float on both
// devices; the CUDA kernels sum in other orders, so relative L2 as METHOD.md uses for float32
// paths, plus a loose element-wise bound).
#ifndef IPS_TESTS_MODELS_GPU_TEST_UTIL_H_
#define IPS_TESTS_MODELS_GPU_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/random.h"
#include "kernels/context.h"
#include "models/model.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips::testing_util {

constexpr double kGpuMaxRelL2 = 1e-4;
constexpr testing::Tolerance kGpuElementwise{1e-4, 2e-3};

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
};

inline double RelL2(const std::vector<float>& got, const std::vector<float>& want) {
  return testing::RelativeL2(got.data(), want.data(), static_cast<int64_t>(want.size()));
}

// B >= 3 random lengths in [0, T] with rows 0, 1, 2 of lengths 0, 1 and T.
inline std::vector<int32_t> RandomLengths(Rng& rng, int64_t B, int64_t T) {
  std::vector<int32_t> lengths(static_cast<size_t>(B));
  for (auto& l : lengths) l = static_cast<int32_t>(rng.UniformInt(static_cast<uint64_t>(T + 1)));
  lengths[0] = 0;
  lengths[1] = 1;
  lengths[2] = static_cast<int32_t>(T);
  return lengths;
}

// B rows of T steps (rows 0, 1, 2 of lengths 0, 1 and T, the rest random) over `item_rows`
// pulled item rows and 7 category rows; B*T + B positions (history, targets), then B*T auxiliary
// negatives when aux_negatives; random labels.
struct RandomCtrBatch {
  int64_t B, T, D, rows_item, rows_cat = 7;
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index, cat_index;
  std::vector<float> item_rows, cat_rows, labels;

  RandomCtrBatch(int64_t b, int64_t t, int64_t d, uint64_t seed, int64_t item_row_count,
                 bool aux_negatives = false)
      : B(b), T(t), D(d), rows_item(item_row_count) {
    Rng rng(seed);
    lengths = RandomLengths(rng, B, T);
    const int64_t n = (aux_negatives ? 2 : 1) * B * T + B;
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

// Every dense tensor alone, so that a small tensor left unwritten cannot hide in the total norm;
// an absolute bound where the reference gradient is (near) zero (e.g. ablated parts, the last
// bias under softmax attention).
inline void ExpectDenseGradsClose(const models::DenseParams<float>& layout,
                                  const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& e : layout.entries()) {
    const float* g = got.data() + e.offset;
    const float* w = want.data() + e.offset;
    double max_abs = 0;
    for (int64_t i = 0; i < e.size; ++i) max_abs = std::max<double>(max_abs, std::fabs(w[i]));
    if (max_abs < 1e-6) {
      EXPECT_TRUE(testing::AllClose(g, w, e.size, {1e-6, 0})) << e.name;
    } else {
      EXPECT_LT(testing::RelativeL2(g, w, e.size), kGpuMaxRelL2) << e.name;
    }
  }
}

// The same initial weights on both devices (initialised on the host either way).
inline void ExpectSameInitialWeights(const models::DenseParams<float>& cpu,
                                     const models::DenseParams<float>& gpu) {
  ASSERT_EQ(cpu.size(), gpu.size());
  EXPECT_TRUE(testing::AllClose(gpu.values(), cpu.values(), cpu.size(), {0, 0}))
      << "initial weights differ";
}

// What one training pass (Forward with labels, Backward) of a CTR model produced.
struct CtrPass {
  float loss = 0;
  std::vector<float> logits, user_vectors, dense_grads, d_item, d_cat;
};

inline CtrPass CtrTrainingPass(models::CtrModel<float>& m, const kernels::Context& ctx,
                               const RandomCtrBatch& b) {
  CtrPass p;
  const auto in = b.Inputs();
  p.loss = NAN;
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.logits.assign(m.logits(), m.logits() + b.B);
  if (m.num_user_vectors() > 0)
    p.user_vectors.assign(m.user_vectors(),
                          m.user_vectors() + b.B * m.num_user_vectors() * m.vector_dim());
  p.d_item.assign(b.rows_item * b.D, NAN);  // poisoned: every gradient must be written
  p.d_cat.assign(b.rows_cat * b.D, NAN);
  std::fill(m.params().grads(), m.params().grads() + m.params().size(), NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_item.data(), p.d_cat.data()));
  p.dense_grads.assign(m.params().grads(), m.params().grads() + m.params().size());
  return p;
}

// A CUDA pass against the CPU pass: loss, logits, user vectors, every pulled row's gradient
// (all written) and every dense tensor of `layout`.
inline void ExpectCtrPassMatches(const CtrPass& got, const CtrPass& want,
                                 const models::DenseParams<float>& layout) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
  EXPECT_TRUE(testing::AllClose(got.logits, want.logits, kGpuElementwise));
  EXPECT_LT(RelL2(got.user_vectors, want.user_vectors), kGpuMaxRelL2);
  EXPECT_LT(RelL2(got.d_item, want.d_item), kGpuMaxRelL2);
  EXPECT_LT(RelL2(got.d_cat, want.d_cat), kGpuMaxRelL2);
  for (float g : got.d_item) ASSERT_FALSE(std::isnan(g)) << "an item row gradient unwritten";
  for (float g : got.d_cat) ASSERT_FALSE(std::isnan(g)) << "a category row gradient unwritten";
  ExpectDenseGradsClose(layout, got.dense_grads, want.dense_grads);
}

// The models' host weights are the reference: scales them by 0.9 on both (as the dense optimizer
// changes them), then compares an inference forward on `in` (labels ignored): logits, the
// non-trained state (Dice statistics brought back by the training passes) and user vectors.
inline void ExpectInferenceMatchesAfterWeightChange(models::CtrModel<float>& cpu,
                                                    models::CtrModel<float>& gpu,
                                                    models::CtrInputs<float> in) {
  for (models::CtrModel<float>* m : {&cpu, &gpu}) {
    float* w = m->params().values();
    for (int64_t i = 0; i < m->params().size(); ++i) w[i] *= 0.9f;
  }
  kernels::Context cpu_ctx, gpu_ctx;
  gpu_ctx.device = kernels::Device::kCuda;
  in.labels = nullptr;
  ASSERT_OK(cpu.Forward(cpu_ctx, in, /*training=*/false, nullptr));
  ASSERT_OK(gpu.Forward(gpu_ctx, in, /*training=*/false, nullptr));
  EXPECT_TRUE(testing::AllClose(gpu.logits(), cpu.logits(), in.batch, kGpuElementwise));
  const auto cpu_state = cpu.state(), gpu_state = gpu.state();
  ASSERT_EQ(cpu_state.size(), gpu_state.size());
  for (size_t i = 0; i < cpu_state.size(); ++i)
    EXPECT_TRUE(
        testing::AllClose(gpu_state[i].data, cpu_state[i].data, cpu_state[i].size, kGpuElementwise))
        << cpu_state[i].name;
  const int64_t n = in.batch * cpu.num_user_vectors() * cpu.vector_dim();
  if (n > 0) {
    EXPECT_LT(testing::RelativeL2(gpu.user_vectors(), cpu.user_vectors(), n), kGpuMaxRelL2);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_FALSE(std::isnan(gpu.user_vectors()[i])) << "user vector element " << i;
  }
}

// ---- Sequence models (models/model.h SeqModel) ----

// B sequences of T steps (lengths as RandomCtrBatch's) over 2B + 5 pulled item rows; [3 x B x T]
// indices (inputs, positives, negatives).
struct RandomSeqBatch {
  int64_t B, T, D, rows;
  std::vector<int32_t> lengths;
  std::vector<int64_t> index;
  std::vector<float> item_rows;

  RandomSeqBatch(int64_t b, int64_t t, int64_t d, uint64_t seed)
      : B(b), T(t), D(d), rows(2 * b + 5) {
    Rng rng(seed);
    lengths = RandomLengths(rng, B, T);
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

struct SeqPass {
  float loss = 0;
  std::vector<float> user_vectors, dense_grads, d_rows;
};

inline SeqPass SeqTrainingPass(models::SeqModel<float>& m, const kernels::Context& ctx,
                               const RandomSeqBatch& b) {
  SeqPass p;
  const auto in = b.Inputs();
  p.loss = NAN;
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.user_vectors.assign(m.user_vectors(), m.user_vectors() + b.B * b.D);
  p.d_rows.assign(b.rows * b.D, NAN);  // poisoned: every gradient must be written
  std::fill(m.params().grads(), m.params().grads() + m.params().size(), NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_rows.data()));
  p.dense_grads.assign(m.params().grads(), m.params().grads() + m.params().size());
  return p;
}

inline void ExpectSeqPassMatches(const SeqPass& got, const SeqPass& want,
                                 const models::DenseParams<float>& layout) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
  EXPECT_LT(RelL2(got.user_vectors, want.user_vectors), kGpuMaxRelL2);
  EXPECT_LT(RelL2(got.d_rows, want.d_rows), kGpuMaxRelL2);
  for (float g : got.d_rows) ASSERT_FALSE(std::isnan(g)) << "a row gradient unwritten";
  ExpectDenseGradsClose(layout, got.dense_grads, want.dense_grads);
}

// As ExpectInferenceMatchesAfterWeightChange for a sequence model: the user vectors of an
// inference forward over `b`'s sequences (B*T indices only).
inline void ExpectSeqInferenceMatchesAfterWeightChange(models::SeqModel<float>& cpu,
                                                       models::SeqModel<float>& gpu,
                                                       RandomSeqBatch b) {
  for (models::SeqModel<float>* m : {&cpu, &gpu}) {
    float* w = m->params().values();
    for (int64_t i = 0; i < m->params().size(); ++i) w[i] *= 0.9f;
  }
  kernels::Context cpu_ctx, gpu_ctx;
  gpu_ctx.device = kernels::Device::kCuda;
  b.index.resize(static_cast<size_t>(b.B * b.T));
  ASSERT_OK(cpu.Forward(cpu_ctx, b.Inputs(), /*training=*/false, nullptr));
  ASSERT_OK(gpu.Forward(gpu_ctx, b.Inputs(), /*training=*/false, nullptr));
  const int64_t n = b.B * b.D;
  EXPECT_LT(testing::RelativeL2(gpu.user_vectors(), cpu.user_vectors(), n), kGpuMaxRelL2);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_FALSE(std::isnan(gpu.user_vectors()[i])) << "user vector element " << i;
}

// A model created on CUDA from `options` (device set here) refuses a CPU Context.
template <typename Model, typename Options, typename Inputs>
void ExpectCudaModelRefusesCpuContext(Options options, const Inputs& in) {
  options.device = kernels::Device::kCuda;
  auto gpu = Model::Create(options);
  ASSERT_OK(gpu.status());
  float loss = 0;
  EXPECT_EQ((*gpu)->Forward(kernels::Context{}, in, true, &loss).code(),
            StatusCode::kInvalidArgument);
}

// ---- The whole comparison ----

// Creates the model of `options` on the CPU and on CUDA (the same initial weights), runs a
// training pass of make_batch(B, seed_base + B) (a RandomCtrBatch or a RandomSeqBatch) for each B
// in batch_sizes through both and compares them (after_pass, when given, adds model-specific
// checks), then the inference check after a weight change on make_batch(23, 7). Give a batch
// below max_batch, then a smaller one: stale data of the larger batch, or sizes taken from
// max_batch instead of the batch, would show.
template <typename Model, typename Options, typename MakeBatch>
void ExpectCudaMatchesCpu(Options options, const std::vector<int64_t>& batch_sizes,
                          uint64_t seed_base, const MakeBatch& make_batch,
                          const std::function<void(Model&, Model&)>& after_pass = {}) {
  auto cpu = Model::Create(options);
  options.device = kernels::Device::kCuda;
  auto gpu = Model::Create(options);
  ASSERT_OK(cpu.status());
  ASSERT_OK(gpu.status());
  ExpectSameInitialWeights((*cpu)->params(), (*gpu)->params());
  kernels::Context cpu_ctx, gpu_ctx;
  gpu_ctx.device = kernels::Device::kCuda;
  for (int64_t B : batch_sizes) {
    SCOPED_TRACE("batch " + std::to_string(B));
    const auto batch = make_batch(B, seed_base + static_cast<uint64_t>(B));
    if constexpr (std::is_same_v<std::decay_t<decltype(batch)>, RandomSeqBatch>) {
      const SeqPass want = SeqTrainingPass(**cpu, cpu_ctx, batch);
      const SeqPass got = SeqTrainingPass(**gpu, gpu_ctx, batch);
      ExpectSeqPassMatches(got, want, (*cpu)->params());
    } else {
      const CtrPass want = CtrTrainingPass(**cpu, cpu_ctx, batch);
      const CtrPass got = CtrTrainingPass(**gpu, gpu_ctx, batch);
      ExpectCtrPassMatches(got, want, (*cpu)->params());
    }
    if (after_pass) after_pass(**cpu, **gpu);
  }
  const auto eval = make_batch(23, 7);
  if constexpr (std::is_same_v<std::decay_t<decltype(eval)>, RandomSeqBatch>) {
    ExpectSeqInferenceMatchesAfterWeightChange(**cpu, **gpu, eval);
  } else {
    ExpectInferenceMatchesAfterWeightChange(**cpu, **gpu, eval.Inputs());
  }
}

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_GPU_TEST_UTIL_H_
