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
#include "kernels/context.h"
#include "models/bst.h"
#include "models/sasrec.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips {
namespace {

using models::Bst;
using models::BstOptions;
using models::BstPooling;
using models::MlpActivation;
using models::Sasrec;
using models::SasrecOptions;
using testing::RelativeL2;

// Float on both devices; cuBLAS, the attention kernels and ScatterAdd's atomics sum in other
// orders, so compare with the relative L2 error METHOD.md uses for float32 paths.
constexpr double kMaxRelL2 = 1e-4;

class TransformerGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
};

double RelL2(const std::vector<float>& got, const std::vector<float>& want) {
  return RelativeL2(got.data(), want.data(), static_cast<int64_t>(want.size()));
}

// Random lengths with 0, 1 and T among them.
std::vector<int32_t> Lengths(Rng& rng, int64_t B, int64_t T) {
  std::vector<int32_t> lengths(static_cast<size_t>(B));
  for (auto& l : lengths) l = static_cast<int32_t>(rng.UniformInt(static_cast<uint64_t>(T + 1)));
  lengths[0] = 0;
  lengths[1] = 1;
  lengths[2] = static_cast<int32_t>(T);
  return lengths;
}

struct Pass {
  float loss = 0;
  std::vector<float> out, dense_grads, d_item, d_cat;
};

void ExpectClose(const Pass& got, const Pass& want, const models::DenseParams<float>& p) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 + 1e-4 * std::fabs(want.loss));
  EXPECT_LT(RelL2(got.out, want.out), kMaxRelL2);
  EXPECT_LT(RelL2(got.d_item, want.d_item), kMaxRelL2);
  EXPECT_LT(RelL2(got.d_cat, want.d_cat), kMaxRelL2);
  for (float g : got.d_item) ASSERT_FALSE(std::isnan(g)) << "an item row gradient unwritten";
  for (float g : got.d_cat) ASSERT_FALSE(std::isnan(g)) << "a category row gradient unwritten";
  // Each dense tensor alone (a small one could hide in the total).
  for (const auto& e : p.entries()) {
    const std::vector<float> g(got.dense_grads.begin() + e.offset,
                               got.dense_grads.begin() + e.offset + e.size);
    const std::vector<float> w(want.dense_grads.begin() + e.offset,
                               want.dense_grads.begin() + e.offset + e.size);
    EXPECT_LT(RelL2(g, w), kMaxRelL2) << e.name;
  }
}

// ---- SASRec ---------------------------------------------------------------------------------

struct SeqBatch {
  int64_t B, T, D, rows;
  std::vector<int32_t> lengths;
  std::vector<int64_t> index;
  std::vector<float> item_rows;

  SeqBatch(int64_t b, int64_t t, int64_t d, uint64_t seed) : B(b), T(t), D(d), rows(2 * b + 5) {
    Rng rng(seed);
    lengths = Lengths(rng, B, T);
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

Pass SasrecPass(Sasrec<float>& m, const kernels::Context& ctx, const SeqBatch& b) {
  Pass p;
  const auto in = b.Inputs();
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.out.assign(m.user_vectors(), m.user_vectors() + b.B * b.D);
  p.d_item.assign(b.rows * b.D, NAN);  // poisoned: every row must be written
  auto& params = m.params();
  std::fill(params.grads(), params.grads() + params.size(), NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_item.data()));
  p.dense_grads.assign(params.grads(), params.grads() + params.size());
  return p;
}

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
      auto cpu = Sasrec<float>::Create(o);
      o.device = kernels::Device::kCuda;
      auto gpu = Sasrec<float>::Create(o);
      ASSERT_OK(cpu.status());
      ASSERT_OK(gpu.status());
      kernels::Context cpu_ctx, gpu_ctx;
      gpu_ctx.device = kernels::Device::kCuda;
      for (int64_t B : {int64_t{33}, int64_t{7}}) {
        SCOPED_TRACE("B " + std::to_string(B));
        const SeqBatch batch(B, o.max_len, o.embedding_dim, 100 + static_cast<uint64_t>(B));
        const Pass want = SasrecPass(**cpu, cpu_ctx, batch);
        const Pass got = SasrecPass(**gpu, gpu_ctx, batch);
        ExpectClose(got, want, (*cpu)->params());
        EXPECT_EQ((*cpu)->dropout_step(), (*gpu)->dropout_step());
      }
      // Inference after the host weights moved: the CUDA model must upload them.
      for (auto* m : {cpu->get(), gpu->get()}) {
        auto& p = m->params();
        for (int64_t i = 0; i < p.size(); ++i) p.values()[i] -= 0.05f * p.grads()[i];
      }
      SeqBatch eval(23, o.max_len, o.embedding_dim, 7);
      eval.index.resize(static_cast<size_t>(eval.B * eval.T));
      ASSERT_OK((*cpu)->Forward(cpu_ctx, eval.Inputs(), false, nullptr));
      ASSERT_OK((*gpu)->Forward(gpu_ctx, eval.Inputs(), false, nullptr));
      const std::vector<float> want((*cpu)->user_vectors(),
                                    (*cpu)->user_vectors() + eval.B * eval.D);
      const std::vector<float> got((*gpu)->user_vectors(),
                                   (*gpu)->user_vectors() + eval.B * eval.D);
      EXPECT_LT(RelL2(got, want), kMaxRelL2);
    }
  }
}

// ---- BST ------------------------------------------------------------------------------------

struct CtrBatch {
  int64_t B, T, D, rows, cats;
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index, cat_index;
  std::vector<float> item_rows, cat_rows, labels;

  CtrBatch(int64_t b, int64_t t, int64_t d, uint64_t seed)
      : B(b), T(t), D(d), rows(2 * b + 5), cats(7) {
    Rng rng(seed);
    lengths = Lengths(rng, B, T);
    for (int64_t i = 0; i < B * T + B; ++i) {
      item_index.push_back(static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(rows))));
      cat_index.push_back(static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(cats))));
    }
    for (int64_t i = 0; i < rows * D; ++i)
      item_rows.push_back(static_cast<float>(2 * rng.Uniform() - 1));
    for (int64_t i = 0; i < cats * D; ++i)
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
    in.num_item_rows = rows;
    in.cat_rows = cat_rows.data();
    in.num_cat_rows = cats;
    in.labels = labels.data();
    return in;
  }
};

Pass BstPass(Bst<float>& m, const kernels::Context& ctx, const CtrBatch& b) {
  Pass p;
  const auto in = b.Inputs();
  EXPECT_OK(m.Forward(ctx, in, /*training=*/true, &p.loss));
  p.out.assign(m.logits(), m.logits() + b.B);
  p.d_item.assign(b.rows * b.D, NAN);
  p.d_cat.assign(b.cats * b.D, NAN);
  auto& params = m.params();
  std::fill(params.grads(), params.grads() + params.size(), NAN);
  EXPECT_OK(m.Backward(ctx, in, p.d_item.data(), p.d_cat.data()));
  p.dense_grads.assign(params.grads(), params.grads() + params.size());
  return p;
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
        auto cpu = Bst<float>::Create(o);
        o.device = kernels::Device::kCuda;
        auto gpu = Bst<float>::Create(o);
        ASSERT_OK(cpu.status());
        ASSERT_OK(gpu.status());
        kernels::Context cpu_ctx, gpu_ctx;
        gpu_ctx.device = kernels::Device::kCuda;
        for (int64_t B : {int64_t{33}, int64_t{7}}) {
          SCOPED_TRACE("B " + std::to_string(B));
          const CtrBatch batch(B, o.max_len, o.embedding_dim, 200 + static_cast<uint64_t>(B));
          const Pass want = BstPass(**cpu, cpu_ctx, batch);
          const Pass got = BstPass(**gpu, gpu_ctx, batch);
          ExpectClose(got, want, (*cpu)->params());
        }
        // Dice's running statistics come back to the host after a training forward.
        const auto cs = (*cpu)->state(), gs = (*gpu)->state();
        ASSERT_EQ(cs.size(), gs.size());
        for (size_t i = 0; i < cs.size(); ++i)
          EXPECT_LT(RelativeL2(gs[i].data, cs[i].data, cs[i].size), kMaxRelL2) << cs[i].name;
        for (auto* m : {cpu->get(), gpu->get()}) {
          auto& p = m->params();
          for (int64_t i = 0; i < p.size(); ++i) p.values()[i] -= 0.05f * p.grads()[i];
        }
        CtrBatch eval(23, o.max_len, o.embedding_dim, 7);
        auto in = eval.Inputs();
        in.labels = nullptr;
        ASSERT_OK((*cpu)->Forward(cpu_ctx, in, false, nullptr));
        ASSERT_OK((*gpu)->Forward(gpu_ctx, in, false, nullptr));
        const std::vector<float> want((*cpu)->logits(), (*cpu)->logits() + eval.B);
        const std::vector<float> got((*gpu)->logits(), (*gpu)->logits() + eval.B);
        EXPECT_LT(RelL2(got, want), kMaxRelL2);
      }
    }
  }
}

TEST_F(TransformerGpu, RejectsAContextOfAnotherDevice) {
  SasrecOptions o;
  o.embedding_dim = 8;
  o.max_len = 6;
  o.max_batch = 4;
  o.device = kernels::Device::kCuda;
  auto gpu = Sasrec<float>::Create(o);
  ASSERT_OK(gpu.status());
  const SeqBatch batch(4, 6, 8, 1);
  float loss = 0;
  EXPECT_EQ((*gpu)->Forward(kernels::Context{}, batch.Inputs(), true, &loss).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips
