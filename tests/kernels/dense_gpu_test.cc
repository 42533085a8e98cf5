// CUDA vs CPU parity of the dense-group ops (activation.h, norm.h, softmax.h, loss.h, capsule.h,
// linear.h) and of Gemm through cuBLAS (all four transpose combinations): identical fresh random
// inputs, device outputs poisoned with NaN before each run, compared with the one comparator.
// Every test skips when no CUDA device is visible.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/random.h"
#include "kernels/activation.h"
#include "kernels/capsule.h"
#include "kernels/context.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/softmax.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::Poison;
using testing::Tolerance;

// A device copy of a host vector (or n NaN-poisoned elements); freed on destruction.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    Alloc();
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  static DeviceArray Poisoned(size_t n) {
    std::vector<T> h(n);
    Poison(h);
    return DeviceArray(h);
  }
  DeviceArray(DeviceArray&& o) noexcept : ptr_(o.ptr_), n_(o.n_) { o.ptr_ = nullptr; }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  T* get() const { return ptr_; }
  // Waits for the device, then copies back.
  std::vector<T> ToHost() const {
    std::vector<T> h(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  }

 private:
  void Alloc() {
    if (n_ > 0) {
      EXPECT_EQ(cudaMalloc(&ptr_, n_ * sizeof(T)), cudaSuccess);
    }
  }
  T* ptr_ = nullptr;
  size_t n_;
};
using Dev = DeviceArray<float>;

std::vector<float> Random(int64_t n, Rng& rng, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  testing::FillUniform(v, rng, lo, hi);
  return v;
}

class DenseGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
  const Context cpu_{};
  const Context gpu_{Device::kCuda, nullptr, nullptr};
  const Tolerance tol_{1e-5, 1e-4};
};

// ---- Gemm (cuBLAS) ------------------------------------------------------------------------------

TEST_F(DenseGpu, Gemm_AllTransposes_MatchesCpu) {
  Rng rng(1);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, n, k] :
           {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {37, 19, 53}, {512, 200, 108}}) {
        const auto a = Random(m * k, rng), b = Random(k * n, rng), c0 = Random(m * n, rng);
        GemmArgs<float> g;
        g.trans_a = ta;
        g.trans_b = tb;
        g.m = m;
        g.n = n;
        g.k = k;
        g.alpha = 0.75f;
        g.beta = 0.5f;
        g.lda = ta ? m : k;
        g.ldb = tb ? k : n;
        g.ldc = n;
        std::vector<float> c = c0;
        g.a = a.data();
        g.b = b.data();
        g.c = c.data();
        ASSERT_TRUE(Gemm(cpu_, g).ok());
        Dev da(a), db(b), dc(c0);
        g.a = da.get();
        g.b = db.get();
        g.c = dc.get();
        ASSERT_TRUE(Gemm(gpu_, g).ok());
        EXPECT_TRUE(AllClose(dc.ToHost(), c, {1e-4, 1e-4}))
            << "ta=" << ta << " tb=" << tb << " " << m << "x" << n << "x" << k;
        // beta = 0 overwrites a poisoned C.
        g.beta = 0.f;
        Dev dp = Dev::Poisoned(m * n);
        g.c = dp.get();
        ASSERT_TRUE(Gemm(gpu_, g).ok());
        std::vector<float> c2(m * n);
        g.a = a.data();
        g.b = b.data();
        g.c = c2.data();
        ASSERT_TRUE(Gemm(cpu_, g).ok());
        EXPECT_TRUE(AllClose(dp.ToHost(), c2, {1e-4, 1e-4}));
      }
}

// k = 0 is an empty sum: C = beta C, and zeros over a poisoned C for beta = 0 (what the CPU path
// writes, and what MindRoutingBackward's empty batch relies on for dS), whatever cuBLAS does.
// ldc > n: the columns past n are finite and must come back untouched.
TEST_F(DenseGpu, Gemm_KZero_WritesBetaTimesC_ZerosForBetaZero) {
  Rng rng(13);
  const int64_t m = 37, n = 19, ldc = 23;
  for (float beta : {0.f, 0.5f, 1.f}) {
    std::vector<float> c = Random(m * ldc, rng);
    if (beta == 0.f) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = NAN;
    }
    GemmArgs<float> g;
    g.m = m;
    g.n = n;
    g.k = 0;
    g.lda = 1;
    g.ldb = n;
    g.ldc = ldc;
    g.beta = beta;
    std::vector<float> want = c;
    g.c = want.data();
    ASSERT_TRUE(Gemm(cpu_, g).ok());
    Dev dc(c);
    g.c = dc.get();
    ASSERT_TRUE(Gemm(gpu_, g).ok()) << "beta=" << beta;
    EXPECT_TRUE(AllClose(dc.ToHost(), want, {0, 1e-6})) << "beta=" << beta;
  }
}

// cuBLAS takes int sizes; a size beyond INT_MAX must be refused, not truncated.
TEST_F(DenseGpu, Gemm_SizeBeyondInt_IsInvalidArgument) {
  GemmArgs<float> g;
  g.m = int64_t{1} << 31;
  g.n = 1;
  g.k = 1;
  g.lda = 1;
  g.ldb = 1;
  g.ldc = 1;
  // Refused before any pointer is used, so none is needed.
  EXPECT_EQ(Gemm(gpu_, g).code(), StatusCode::kInvalidArgument);
}

// ---- activation.h -----------------------------------------------------------------------------

TEST_F(DenseGpu, BiasActivationAndBackward_AllActivations) {
  Rng rng(2);
  const int64_t rows = 513, cols = 200;
  for (Activation act : {Activation::kIdentity, Activation::kRelu, Activation::kLeakyRelu,
                         Activation::kSigmoid, Activation::kTanh}) {
    const auto x = Random(rows * cols, rng, -3, 3), bias = Random(cols, rng),
               dy = Random(rows * cols, rng);
    std::vector<float> y(rows * cols), dx(rows * cols), db(cols);
    BiasActivationArgs<float> f;
    f.rows = rows;
    f.cols = cols;
    f.act = act;
    f.slope = 0.05f;
    f.x = x.data();
    f.bias = bias.data();
    f.y = y.data();
    ASSERT_TRUE(BiasActivationForward(cpu_, f).ok());
    ActivationBackwardArgs<float> b;
    b.n = rows * cols;
    b.act = act;
    b.slope = 0.05f;
    b.y = y.data();
    b.dy = dy.data();
    b.dx = dx.data();
    ASSERT_TRUE(ActivationBackward(cpu_, b).ok());
    BiasGradArgs<float> g{rows, cols, dx.data(), db.data()};
    ASSERT_TRUE(BiasGrad(cpu_, g).ok());

    Dev dx_(x), dbias(bias), ddy(dy), dy_out = Dev::Poisoned(rows * cols),
                                      ddx = Dev::Poisoned(rows * cols), ddb = Dev::Poisoned(cols);
    f.x = dx_.get();
    f.bias = dbias.get();
    f.y = dy_out.get();
    ASSERT_TRUE(BiasActivationForward(gpu_, f).ok());
    b.y = dy_out.get();
    b.dy = ddy.get();
    b.dx = ddx.get();
    ASSERT_TRUE(ActivationBackward(gpu_, b).ok());
    g.dy = ddx.get();
    g.dbias = ddb.get();
    ASSERT_TRUE(BiasGrad(gpu_, g).ok());
    EXPECT_TRUE(AllClose(dy_out.ToHost(), y, tol_)) << static_cast<int>(act);
    EXPECT_TRUE(AllClose(ddx.ToHost(), dx, tol_)) << static_cast<int>(act);
    EXPECT_TRUE(AllClose(ddb.ToHost(), db, {1e-4, 1e-4})) << static_cast<int>(act);
  }
}

TEST_F(DenseGpu, Prelu_ForwardBackward) {
  Rng rng(3);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {512, 200}, {37, 80}}) {
    const auto x = Random(rows * cols, rng), alpha = Random(cols, rng, 0.f, 0.5f),
               dy = Random(rows * cols, rng);
    std::vector<float> y(rows * cols), dx(rows * cols), da(cols);
    PreluArgs<float> a;
    a.rows = rows;
    a.cols = cols;
    a.x = x.data();
    a.alpha = alpha.data();
    a.y = y.data();
    a.dy = dy.data();
    a.dx = dx.data();
    a.dalpha = da.data();
    ASSERT_TRUE(PreluForward(cpu_, a).ok());
    ASSERT_TRUE(PreluBackward(cpu_, a).ok());
    Dev gx(x), ga(alpha), gdy(dy), gy = Dev::Poisoned(rows * cols),
                                   gdx = Dev::Poisoned(rows * cols), gda = Dev::Poisoned(cols);
    a.x = gx.get();
    a.alpha = ga.get();
    a.y = gy.get();
    a.dy = gdy.get();
    a.dx = gdx.get();
    a.dalpha = gda.get();
    ASSERT_TRUE(PreluForward(gpu_, a).ok());
    ASSERT_TRUE(PreluBackward(gpu_, a).ok());
    EXPECT_TRUE(AllClose(gy.ToHost(), y, tol_));
    EXPECT_TRUE(AllClose(gdx.ToHost(), dx, tol_));
    EXPECT_TRUE(AllClose(gda.ToHost(), da, {1e-4, 1e-4}));
  }
}

TEST_F(DenseGpu, Dropout_IdenticalMaskToCpu) {
  Rng rng(4);
  const int64_t n = 300001;
  const auto x = Random(n, rng, 0.5f, 1.5f), dy = Random(n, rng, 0.5f, 1.5f);
  for (float p : {0.f, 0.1f, 0.5f, 1.f}) {
    std::vector<float> y(n), dx(n);
    DropoutArgs<float> a;
    a.n = n;
    a.p = p;
    a.seed = 1234;
    a.offset = 77;
    a.x = x.data();
    a.y = y.data();
    a.dy = dy.data();
    a.dx = dx.data();
    ASSERT_TRUE(DropoutForward(cpu_, a).ok());
    ASSERT_TRUE(DropoutBackward(cpu_, a).ok());
    Dev gx(x), gdy(dy), gy = Dev::Poisoned(n), gdx = Dev::Poisoned(n);
    a.x = gx.get();
    a.y = gy.get();
    a.dy = gdy.get();
    a.dx = gdx.get();
    ASSERT_TRUE(DropoutForward(gpu_, a).ok());
    ASSERT_TRUE(DropoutBackward(gpu_, a).ok());
    const auto hy = gy.ToHost(), hdx = gdx.ToHost();
    int64_t mask_diff = 0;
    for (int64_t i = 0; i < n; ++i) mask_diff += (hy[i] == 0.f) != (y[i] == 0.f);
    EXPECT_EQ(mask_diff, 0) << "p=" << p;
    EXPECT_TRUE(AllClose(hy, y, {0, 1e-6})) << "p=" << p;
    EXPECT_TRUE(AllClose(hdx, dx, {0, 1e-6})) << "p=" << p;
  }
}

// ---- norm.h -----------------------------------------------------------------------------------

TEST_F(DenseGpu, LayerNorm_ForwardBackward) {
  Rng rng(5);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 1}, {25600, 50}, {7, 129}}) {
    const auto x = Random(rows * dim, rng, -2, 2), gamma = Random(dim, rng),
               beta = Random(dim, rng), dy = Random(rows * dim, rng);
    std::vector<float> y(rows * dim), mean(rows), rstd(rows), dx(rows * dim), dg(dim), db(dim);
    LayerNormArgs<float> a;
    a.rows = rows;
    a.dim = dim;
    a.x = x.data();
    a.gamma = gamma.data();
    a.beta = beta.data();
    a.y = y.data();
    a.mean = mean.data();
    a.rstd = rstd.data();
    a.dy = dy.data();
    a.dx = dx.data();
    a.dgamma = dg.data();
    a.dbeta = db.data();
    ASSERT_TRUE(LayerNormForward(cpu_, a).ok());
    ASSERT_TRUE(LayerNormBackward(cpu_, a).ok());
    Dev gx(x), gg(gamma), gb(beta), gdy(dy),
        gy = Dev::Poisoned(rows * dim), gm = Dev::Poisoned(rows), gr = Dev::Poisoned(rows),
        gdx = Dev::Poisoned(rows * dim), gdg = Dev::Poisoned(dim), gdb = Dev::Poisoned(dim);
    a.x = gx.get();
    a.gamma = gg.get();
    a.beta = gb.get();
    a.y = gy.get();
    a.mean = gm.get();
    a.rstd = gr.get();
    a.dy = gdy.get();
    a.dx = gdx.get();
    a.dgamma = gdg.get();
    a.dbeta = gdb.get();
    ASSERT_TRUE(LayerNormForward(gpu_, a).ok());
    ASSERT_TRUE(LayerNormBackward(gpu_, a).ok());
    EXPECT_TRUE(AllClose(gy.ToHost(), y, {1e-4, 1e-4}));
    EXPECT_TRUE(AllClose(gdx.ToHost(), dx, {1e-4, 1e-3}));
    EXPECT_LT(testing::RelativeL2(gdg.ToHost().data(), dg.data(), dim), 1e-4);
    EXPECT_LT(testing::RelativeL2(gdb.ToHost().data(), db.data(), dim), 1e-4);
  }
}

TEST_F(DenseGpu, BatchNormAndDice_TrainingAndInference) {
  Rng rng(6);
  const int64_t n = 512, c = 200;
  for (bool dice : {false, true}) {
    for (bool training : {true, false}) {
      const auto x = Random(n * c, rng, -2, 2), gamma = Random(c, rng), beta = Random(c, rng),
                 alpha = Random(c, rng, -0.5f, 0.5f), rm0 = Random(c, rng),
                 rv0 = Random(c, rng, 0.5f, 2.f), dy = Random(n * c, rng);
      std::vector<float> y(n * c), sm(c), sr(c), dx(n * c), dg(c), db(c), rm = rm0, rv = rv0;
      BatchNormArgs<float> bn;
      DiceArgs<float> di;
      auto fill = [&](auto& a) {
        a.n = n;
        a.c = c;
        a.training = training;
      };
      fill(bn);
      fill(di);
      auto run = [&](const Context& ctx, const float* px, const float* pg, const float* pb,
                     const float* pa, float* prm, float* prv, float* py, float* psm, float* psr,
                     const float* pdy, float* pdx, float* pdg, float* pdb) {
        if (dice) {
          di.x = px;
          di.alpha = pa;
          di.running_mean = prm;
          di.running_var = prv;
          di.y = py;
          di.save_mean = psm;
          di.save_rstd = psr;
          di.dy = pdy;
          di.dx = pdx;
          di.dalpha = pdg;
          EXPECT_TRUE(DiceForward(ctx, di).ok());
          EXPECT_TRUE(DiceBackward(ctx, di).ok());
        } else {
          bn.x = px;
          bn.gamma = pg;
          bn.beta = pb;
          bn.running_mean = prm;
          bn.running_var = prv;
          bn.y = py;
          bn.save_mean = psm;
          bn.save_rstd = psr;
          bn.dy = pdy;
          bn.dx = pdx;
          bn.dgamma = pdg;
          bn.dbeta = pdb;
          EXPECT_TRUE(BatchNormForward(ctx, bn).ok());
          EXPECT_TRUE(BatchNormBackward(ctx, bn).ok());
        }
      };
      run(cpu_, x.data(), gamma.data(), beta.data(), alpha.data(), rm.data(), rv.data(), y.data(),
          sm.data(), sr.data(), dy.data(), dx.data(), dg.data(), db.data());
      Dev gx(x), gg(gamma), gb(beta), ga(alpha), grm(rm0), grv(rv0), gdy(dy),
          gy = Dev::Poisoned(n * c), gsm = Dev::Poisoned(c), gsr = Dev::Poisoned(c),
          gdx = Dev::Poisoned(n * c), gdg = Dev::Poisoned(c), gdb = Dev::Poisoned(c);
      run(gpu_, gx.get(), gg.get(), gb.get(), ga.get(), grm.get(), grv.get(), gy.get(), gsm.get(),
          gsr.get(), gdy.get(), gdx.get(), gdg.get(), gdb.get());
      const std::string what = std::string(dice ? "dice" : "bn") + (training ? " train" : " infer");
      EXPECT_TRUE(AllClose(gy.ToHost(), y, {1e-4, 1e-4})) << what;
      EXPECT_TRUE(AllClose(grm.ToHost(), rm, {1e-5, 1e-4})) << what;
      EXPECT_TRUE(AllClose(grv.ToHost(), rv, {1e-5, 1e-4})) << what;
      EXPECT_TRUE(AllClose(gsm.ToHost(), sm, {1e-5, 1e-4})) << what;
      EXPECT_TRUE(AllClose(gsr.ToHost(), sr, {1e-5, 1e-4})) << what;
      EXPECT_TRUE(AllClose(gdx.ToHost(), dx, {1e-4, 1e-3})) << what;
      EXPECT_LT(testing::RelativeL2(gdg.ToHost().data(), dg.data(), c), 1e-4) << what;
      if (!dice) {
        EXPECT_LT(testing::RelativeL2(gdb.ToHost().data(), db.data(), c), 1e-4) << what;
      }
    }
  }
}

// ---- softmax.h --------------------------------------------------------------------------------

TEST_F(DenseGpu, MaskedSoftmax_LengthsAndPadding) {
  Rng rng(7);
  const int64_t cols = 50, per = 4;
  std::vector<int32_t> lengths = {0, 1, 50, 99, -1, 23, 49, 2};
  const int64_t rows = static_cast<int64_t>(lengths.size()) * per;
  DeviceArray<int32_t> glen(lengths);
  for (bool left : {false, true}) {
    const auto x = Random(rows * cols, rng, -4, 4), dy = Random(rows * cols, rng);
    std::vector<float> y(rows * cols), dx(rows * cols);
    SoftmaxArgs<float> a;
    a.rows = rows;
    a.cols = cols;
    a.lengths = lengths.data();
    a.rows_per_length = per;
    a.left_padded = left;
    a.x = x.data();
    a.y = y.data();
    a.dy = dy.data();
    a.dx = dx.data();
    ASSERT_TRUE(SoftmaxForward(cpu_, a).ok());
    ASSERT_TRUE(SoftmaxBackward(cpu_, a).ok());
    Dev gx(x), gdy(dy), gy = Dev::Poisoned(rows * cols), gdx = Dev::Poisoned(rows * cols);
    a.lengths = glen.get();
    a.x = gx.get();
    a.y = gy.get();
    a.dy = gdy.get();
    a.dx = gdx.get();
    ASSERT_TRUE(SoftmaxForward(gpu_, a).ok());
    ASSERT_TRUE(SoftmaxBackward(gpu_, a).ok());
    EXPECT_TRUE(AllClose(gy.ToHost(), y, {1e-6, 1e-4})) << "left=" << left;
    EXPECT_TRUE(AllClose(gdx.ToHost(), dx, {1e-6, 1e-4})) << "left=" << left;
  }
}

// ---- loss.h -----------------------------------------------------------------------------------

TEST_F(DenseGpu, BceWithLogits_AllReductions) {
  Rng rng(8);
  for (Reduction red : {Reduction::kSum, Reduction::kMean, Reduction::kMaskedMean}) {
    for (int64_t n : {int64_t{1}, int64_t{25600}}) {
      const auto x = Random(n, rng, -20, 20), y = Random(n, rng, 0, 1), w = Random(n, rng, 0, 1);
      float loss = NAN;
      std::vector<float> dx(n);
      BceWithLogitsArgs<float> a;
      a.n = n;
      a.reduction = red;
      a.logits = x.data();
      a.labels = y.data();
      a.weights = w.data();
      a.loss = &loss;
      a.dloss = 1.5f;
      a.dlogits = dx.data();
      ASSERT_TRUE(BceWithLogitsForward(cpu_, a).ok());
      ASSERT_TRUE(BceWithLogitsBackward(cpu_, a).ok());
      Dev gx(x), gy(y), gw(w), gl = Dev::Poisoned(1), gdx = Dev::Poisoned(n);
      a.logits = gx.get();
      a.labels = gy.get();
      a.weights = gw.get();
      a.loss = gl.get();
      a.dlogits = gdx.get();
      ASSERT_TRUE(BceWithLogitsForward(gpu_, a).ok());
      ASSERT_TRUE(BceWithLogitsBackward(gpu_, a).ok());
      EXPECT_TRUE(AllClose(gl.ToHost(), std::vector<float>{loss}, {1e-5, 1e-4}));
      EXPECT_TRUE(AllClose(gdx.ToHost(), dx, {1e-7, 1e-4}));
    }
  }
}

TEST_F(DenseGpu, SampledSoftmax_WithAndWithoutLogQ) {
  Rng rng(9);
  for (bool correct : {false, true}) {
    for (auto [rows, classes] : {std::pair<int64_t, int64_t>{1, 1}, {512, 101}, {3, 40}}) {
      const auto l = Random(rows * classes, rng, -10, 10), q = Random(rows * classes, rng, -12, -1);
      float loss = NAN;
      std::vector<float> d(rows * classes);
      SampledSoftmaxArgs<float> a;
      a.rows = rows;
      a.classes = classes;
      a.logits = l.data();
      a.log_q = correct ? q.data() : nullptr;
      a.loss = &loss;
      a.dlogits = d.data();
      ASSERT_TRUE(SampledSoftmaxForward(cpu_, a).ok());
      ASSERT_TRUE(SampledSoftmaxBackward(cpu_, a).ok());
      Dev gl(l), gq(q), gloss = Dev::Poisoned(1), gd = Dev::Poisoned(rows * classes);
      a.logits = gl.get();
      a.log_q = correct ? gq.get() : nullptr;
      a.loss = gloss.get();
      a.dlogits = gd.get();
      ASSERT_TRUE(SampledSoftmaxForward(gpu_, a).ok());
      ASSERT_TRUE(SampledSoftmaxBackward(gpu_, a).ok());
      EXPECT_TRUE(AllClose(gloss.ToHost(), std::vector<float>{loss}, {1e-5, 1e-4}));
      EXPECT_TRUE(AllClose(gd.ToHost(), d, {1e-7, 1e-4}));
    }
  }
}

// ---- capsule.h --------------------------------------------------------------------------------

TEST_F(DenseGpu, Squash_ForwardBackward_WithZeroRow) {
  Rng rng(10);
  const int64_t rows = 1000, dim = 64;
  auto x = Random(rows * dim, rng, -0.5f, 0.5f);
  for (int64_t k = 0; k < dim; ++k) x[5 * dim + k] = 0.f;
  const auto dy = Random(rows * dim, rng);
  std::vector<float> y(rows * dim), dx(rows * dim);
  SquashArgs<float> a{rows, dim, x.data(), y.data(), dy.data(), dx.data()};
  ASSERT_TRUE(SquashForward(cpu_, a).ok());
  ASSERT_TRUE(SquashBackward(cpu_, a).ok());
  Dev gx(x), gdy(dy), gy = Dev::Poisoned(rows * dim), gdx = Dev::Poisoned(rows * dim);
  a = {rows, dim, gx.get(), gy.get(), gdy.get(), gdx.get()};
  ASSERT_TRUE(SquashForward(gpu_, a).ok());
  ASSERT_TRUE(SquashBackward(gpu_, a).ok());
  EXPECT_TRUE(AllClose(gy.ToHost(), y, tol_));
  EXPECT_TRUE(AllClose(gdx.ToHost(), dx, tol_));
}

TEST_F(DenseGpu, MindRouting_ForwardBackward_Lengths0_1_Max) {
  Rng rng(11);
  const int64_t B = 97, T = 50, D = 36, D2 = 64, K = 4;
  std::vector<int32_t> len(B);
  for (auto& l : len) l = static_cast<int32_t>(rng.UniformInt(T + 1));
  len[0] = 0;
  len[1] = 1;
  len[2] = T;
  const auto e = Random(B * T * D, rng), s = Random(D * D2, rng, -0.3f, 0.3f),
             dout = Random(B * K * D2, rng);
  std::vector<float> init(K * T);
  MindRoutingInitLogits(3, K, T, 1.0, init.data());
  for (bool per_row : {false, true}) {
    std::vector<float> init_used = init;
    if (per_row) init_used = Random(B * K * T, rng, -1, 1);
    std::vector<float> out(B * K * D2), ehat(B * T * D2), w(B * K * T), fl(B * K * T),
        z(B * K * D2), de(B * T * D), ds(D * D2), ws(MindRoutingBackwardWorkspaceSize(B, T, D2));
    MindRoutingArgs<float> a;
    a.batch = B;
    a.max_len = T;
    a.in_dim = D;
    a.out_dim = D2;
    a.num_interests = K;
    a.iterations = 3;
    a.init_logits_per_row = per_row;
    auto bind = [&](const float* pe, const int32_t* pl, const float* ps, const float* pi, float* po,
                    float* peh, float* pw, float* pfl, float* pz, const float* pdo, float* pde,
                    float* pds, float* pws) {
      a.e = pe;
      a.lengths = pl;
      a.s = ps;
      a.init_logits = pi;
      a.out = po;
      a.ehat = peh;
      a.weights = pw;
      a.final_logits = pfl;
      a.z = pz;
      a.dout = pdo;
      a.de = pde;
      a.ds = pds;
      a.workspace = pws;
    };
    bind(e.data(), len.data(), s.data(), init_used.data(), out.data(), ehat.data(), w.data(),
         fl.data(), z.data(), dout.data(), de.data(), ds.data(), ws.data());
    ASSERT_TRUE(MindRoutingForward(cpu_, a).ok());
    ASSERT_TRUE(MindRoutingBackward(cpu_, a).ok());
    DeviceArray<int32_t> glen(len);
    Dev ge(e), gs(s), gi(init_used), gdo(dout),
        go = Dev::Poisoned(out.size()), geh = Dev::Poisoned(ehat.size()),
        gw = Dev::Poisoned(w.size()), gfl = Dev::Poisoned(fl.size()), gz = Dev::Poisoned(z.size()),
        gde = Dev::Poisoned(de.size()), gds = Dev::Poisoned(ds.size()),
        gws = Dev::Poisoned(ws.size());
    bind(ge.get(), glen.get(), gs.get(), gi.get(), go.get(), geh.get(), gw.get(), gfl.get(),
         gz.get(), gdo.get(), gde.get(), gds.get(), gws.get());
    ASSERT_TRUE(MindRoutingForward(gpu_, a).ok());
    ASSERT_TRUE(MindRoutingBackward(gpu_, a).ok());
    EXPECT_TRUE(AllClose(go.ToHost(), out, {1e-5, 1e-3})) << "per_row=" << per_row;
    EXPECT_TRUE(AllClose(gw.ToHost(), w, {1e-5, 1e-3}));
    EXPECT_TRUE(AllClose(gde.ToHost(), de, {1e-4, 1e-3}));
    EXPECT_LT(testing::RelativeL2(gds.ToHost().data(), ds.data(), D * D2), 1e-4);
  }
}

// ---- linear.h (cuBLAS + fused bias/activation) ------------------------------------------------

TEST_F(DenseGpu, Linear_DinMlpLayer_ForwardBackward) {
  Rng rng(12);
  const int64_t rows = 512, in = 108, out = 200;
  const auto x = Random(rows * in, rng), w = Random(out * in, rng, -0.1f, 0.1f),
             b = Random(out, rng), dy = Random(rows * out, rng);
  std::vector<float> y(rows * out), dpre(rows * out), dx(rows * in), dw(out * in), db(out);
  LinearArgs<float> a;
  a.rows = rows;
  a.in = in;
  a.out = out;
  a.act = Activation::kSigmoid;
  a.x = x.data();
  a.w = w.data();
  a.bias = b.data();
  a.y = y.data();
  a.dy = dy.data();
  a.dpre = dpre.data();
  a.dx = dx.data();
  a.dw = dw.data();
  a.dbias = db.data();
  ASSERT_TRUE(LinearForward(cpu_, a).ok());
  ASSERT_TRUE(LinearBackward(cpu_, a).ok());
  Dev gx(x), gw(w), gb(b), gdy(dy), gy = Dev::Poisoned(rows * out), gdp = Dev::Poisoned(rows * out),
                                    gdx = Dev::Poisoned(rows * in), gdw = Dev::Poisoned(out * in),
                                    gdb = Dev::Poisoned(out);
  a.x = gx.get();
  a.w = gw.get();
  a.bias = gb.get();
  a.y = gy.get();
  a.dy = gdy.get();
  a.dpre = gdp.get();
  a.dx = gdx.get();
  a.dw = gdw.get();
  a.dbias = gdb.get();
  ASSERT_TRUE(LinearForward(gpu_, a).ok());
  ASSERT_TRUE(LinearBackward(gpu_, a).ok());
  EXPECT_TRUE(AllClose(gy.ToHost(), y, {1e-5, 1e-4}));
  EXPECT_TRUE(AllClose(gdx.ToHost(), dx, {1e-5, 1e-3}));
  EXPECT_LT(testing::RelativeL2(gdw.ToHost().data(), dw.data(), out * in), 1e-5);
  EXPECT_LT(testing::RelativeL2(gdb.ToHost().data(), db.data(), out), 1e-5);
}

TEST_F(DenseGpu, DoubleOnCudaIsUnimplemented) {
  std::vector<double> x(4), y(4);
  BiasActivationArgs<double> a;
  a.rows = 2;
  a.cols = 2;
  a.x = x.data();
  a.y = y.data();
  EXPECT_EQ(BiasActivationForward(gpu_, a).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace ips::kernels
