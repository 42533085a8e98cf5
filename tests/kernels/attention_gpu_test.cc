// CUDA parity tests of kernels/attention.h: every CUDA op against the CPU one (itself tested
// against the scalar reference and finite differences in attention_test.cc) on fresh random
// inputs, NaN-poisoned outputs, lengths 0, 1 and max. Skipped when no CUDA device is visible.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "common/random.h"
#include "kernels/attention.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::Poison;

// Owns one device array mirroring a host vector.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    if (n_ > 0) {
      EXPECT_EQ(cudaMalloc(&p_, n_ * sizeof(T)), cudaSuccess);
    }
  }
  explicit DeviceArray(const std::vector<T>& h) : DeviceArray(h.size()) { Upload(h); }
  ~DeviceArray() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void Upload(const std::vector<T>& h) {
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  std::vector<T> Download() const {
    std::vector<T> h(n_);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  }
  // Fills with NaN bytes (0xFF..), so unwritten outputs fail the comparison.
  void Poison() {
    if (n_ > 0) {
      EXPECT_EQ(cudaMemset(p_, 0xFF, n_ * sizeof(T)), cudaSuccess);
    }
  }
  T* get() { return p_; }

 private:
  size_t n_;
  T* p_ = nullptr;
};

void Fill(std::vector<float>& v, Rng& rng, float lo, float hi) {
  for (auto& x : v) x = lo + (hi - lo) * rng.UniformFloat();
}

std::vector<int32_t> Lengths(int64_t B, int64_t T, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> len(B);
  for (auto& l : len) l = static_cast<int32_t>(rng.UniformInt(T + 1));
  len[0] = 0;
  len[1] = 1;
  len[2] = static_cast<int32_t>(T);
  return len;
}

struct DinCase {
  int64_t B, T, E, H1, H2;
  Padding padding;
  bool softmax;
  bool pool;
};

void RunDinParity(const DinCase& c) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  Rng rng(101);
  std::vector<float> q(c.B * c.E), k(c.B * c.T * c.E), w1(c.H1 * 4 * c.E), b1(c.H1),
      w2(c.H2 * c.H1), b2(c.H2), w3(c.H2), b3(1), dw(c.B * c.T), dp(c.B * c.E);
  Fill(q, rng, -1, 1);
  Fill(k, rng, -1, 1);
  Fill(w1, rng, -0.5f, 0.5f);
  Fill(b1, rng, -0.5f, 0.5f);
  Fill(w2, rng, -0.5f, 0.5f);
  Fill(b2, rng, -0.5f, 0.5f);
  Fill(w3, rng, -1, 1);
  Fill(b3, rng, -0.5f, 0.5f);
  Fill(dw, rng, -1, 1);
  Fill(dp, rng, -1, 1);
  std::vector<int32_t> len = Lengths(c.B, c.T, 103);
  DinAttentionArgs<float> a;
  a.batch = c.B;
  a.max_len = c.T;
  a.dim = c.E;
  a.hidden1 = c.H1;
  a.hidden2 = c.H2;
  a.padding = c.padding;
  a.softmax = c.softmax;
  a.query = q.data();
  a.keys = k.data();
  a.lengths = len.data();
  a.w1 = w1.data();
  a.b1 = b1.data();
  a.w2 = w2.data();
  a.b2 = b2.data();
  a.w3 = w3.data();
  a.b3 = b3.data();
  // CPU result.
  std::vector<float> weights(c.B * c.T), pooled(c.B * c.E), saved(DinAttentionSavedSize(a)),
      work(DinAttentionBackwardWorkspaceSize(a));
  std::vector<float> gq(q.size()), gk(k.size()), gw1(w1.size()), gb1(b1.size()), gw2(w2.size()),
      gb2(b2.size()), gw3(w3.size()), gb3(1);
  ASSERT_TRUE(DinAttentionForward(Context{}, a, weights.data(), c.pool ? pooled.data() : nullptr,
                                  saved.data())
                  .ok());
  ASSERT_TRUE(DinAttentionBackward(Context{}, a, saved.data(), dw.data(),
                                   c.pool ? dp.data() : nullptr,
                                   {gq.data(), gk.data(), gw1.data(), gb1.data(), gw2.data(),
                                    gb2.data(), gw3.data(), gb3.data()},
                                   work.data())
                  .ok());
  // CUDA result.
  DeviceArray<float> dq_(q), dk_(k), dw1_(w1), db1_(b1), dw2_(w2), db2_(b2), dw3_(w3), db3_(b3),
      ddw(dw), ddp(dp), dweights(weights.size()), dpooled(pooled.size()), dsaved(saved.size()),
      dwork(work.size()), ggq(gq.size()), ggk(gk.size()), ggw1(gw1.size()), ggb1(gb1.size()),
      ggw2(gw2.size()), ggb2(gb2.size()), ggw3(gw3.size()), ggb3(1);
  DeviceArray<int32_t> dlen(len);
  for (auto* d :
       {&dweights, &dpooled, &dsaved, &dwork, &ggq, &ggk, &ggw1, &ggb1, &ggw2, &ggb2, &ggw3, &ggb3})
    d->Poison();
  DinAttentionArgs<float> g = a;
  g.query = dq_.get();
  g.keys = dk_.get();
  g.lengths = dlen.get();
  g.w1 = dw1_.get();
  g.b1 = db1_.get();
  g.w2 = dw2_.get();
  g.b2 = db2_.get();
  g.w3 = dw3_.get();
  g.b3 = db3_.get();
  Context cuda;
  cuda.device = Device::kCuda;
  ASSERT_TRUE(
      DinAttentionForward(cuda, g, dweights.get(), c.pool ? dpooled.get() : nullptr, dsaved.get())
          .ok());
  ASSERT_TRUE(DinAttentionBackward(cuda, g, dsaved.get(), ddw.get(), c.pool ? ddp.get() : nullptr,
                                   {ggq.get(), ggk.get(), ggw1.get(), ggb1.get(), ggw2.get(),
                                    ggb2.get(), ggw3.get(), ggb3.get()},
                                   dwork.get())
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const testing::Tolerance tol{1e-4, 1e-3};
  EXPECT_TRUE(AllClose(dweights.Download(), weights, tol)) << "weights";
  if (c.pool) {
    EXPECT_TRUE(AllClose(dpooled.Download(), pooled, tol)) << "pooled";
  }
  EXPECT_TRUE(AllClose(ggq.Download(), gq, tol)) << "d_query";
  EXPECT_TRUE(AllClose(ggk.Download(), gk, tol)) << "d_keys";
  EXPECT_TRUE(AllClose(ggw1.Download(), gw1, {1e-3, 1e-3})) << "d_w1";
  EXPECT_TRUE(AllClose(ggb1.Download(), gb1, {1e-3, 1e-3})) << "d_b1";
  EXPECT_TRUE(AllClose(ggw2.Download(), gw2, {1e-3, 1e-3})) << "d_w2";
  EXPECT_TRUE(AllClose(ggb2.Download(), gb2, {1e-3, 1e-3})) << "d_b2";
  EXPECT_TRUE(AllClose(ggw3.Download(), gw3, {1e-3, 1e-3})) << "d_w3";
  EXPECT_TRUE(AllClose(ggb3.Download(), gb3, {1e-3, 1e-3})) << "d_b3";
}

TEST(DinAttentionGpu, MatchesCpu_Raw_LeftPad_Pooled_B64_T50_E36_H80_40) {
  RunDinParity({64, 50, 36, 80, 40, Padding::kLeft, false, true});
}
TEST(DinAttentionGpu, MatchesCpu_Softmax_LeftPad_Pooled_B64_T50_E36_H80_40) {
  RunDinParity({64, 50, 36, 80, 40, Padding::kLeft, true, true});
}
// DIEN: target over GRU states, E = H = 36, T = 50, right padding, softmax, no pooling.
TEST(DienAttentionGpu, MatchesCpu_Softmax_RightPad_E36_T50) {
  RunDinParity({32, 50, 36, 80, 40, Padding::kRight, true, false});
}
TEST(DinAttentionGpu, MatchesCpu_OddWidths_B5_T7_E3_H9_2) {
  RunDinParity({5, 7, 3, 9, 2, Padding::kRight, false, true});
}

struct MhaCase {
  int64_t B, T, H, D;
  bool causal;
  Padding padding;
  bool lengths;
  double dropout;
};

void RunMhaParity(const MhaCase& c) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  Rng rng(201);
  const int64_t n = c.B * c.T * c.H * c.D;
  std::vector<float> q(n), k(n), v(n), up(n);
  Fill(q, rng, -1.5f, 1.5f);
  Fill(k, rng, -1.5f, 1.5f);
  Fill(v, rng, -1, 1);
  Fill(up, rng, -1, 1);
  std::vector<int32_t> len = Lengths(c.B, c.T, 203);
  MhaArgs<float> a;
  a.batch = c.B;
  a.seq_len = c.T;
  a.heads = c.H;
  a.head_dim = c.D;
  a.causal = c.causal;
  a.padding = c.padding;
  a.lengths = c.lengths ? len.data() : nullptr;
  a.dropout = c.dropout;
  a.seed = 77;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  std::vector<float> out(n), saved(MhaSavedSize(a)), dq(n), dk(n), dv(n);
  ASSERT_TRUE(MhaForward(Context{}, a, out.data(), saved.data()).ok());
  ASSERT_TRUE(
      MhaBackward(Context{}, a, saved.data(), up.data(), dq.data(), dk.data(), dv.data()).ok());
  DeviceArray<float> gq(q), gk(k), gv(v), gup(up), gout(n), gsaved(saved.size()), gdq(n), gdk(n),
      gdv(n);
  DeviceArray<int32_t> glen(len);
  for (auto* d : {&gout, &gsaved, &gdq, &gdk, &gdv}) d->Poison();
  MhaArgs<float> g = a;
  g.q = gq.get();
  g.k = gk.get();
  g.v = gv.get();
  g.lengths = c.lengths ? glen.get() : nullptr;
  Context cuda;
  cuda.device = Device::kCuda;
  ASSERT_TRUE(MhaForward(cuda, g, gout.get(), gsaved.get()).ok());
  ASSERT_TRUE(MhaBackward(cuda, g, gsaved.get(), gup.get(), gdq.get(), gdk.get(), gdv.get()).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const testing::Tolerance tol{1e-4, 1e-3};
  EXPECT_TRUE(AllClose(gsaved.Download(), saved, tol)) << "probabilities";
  EXPECT_TRUE(AllClose(gout.Download(), out, tol)) << "out";
  EXPECT_TRUE(AllClose(gdq.Download(), dq, tol)) << "dq";
  EXPECT_TRUE(AllClose(gdk.Download(), dk, tol)) << "dk";
  EXPECT_TRUE(AllClose(gdv.Download(), dv, tol)) << "dv";
}

TEST(MhaGpu, MatchesCpu_SASRec_B16_T50_H1_D50_Causal_LeftPad_Dropout) {
  RunMhaParity({16, 50, 1, 50, true, Padding::kLeft, true, 0.5});
}
TEST(MhaGpu, MatchesCpu_B4_T37_H4_D16_RightPad_NoCausal) {
  RunMhaParity({4, 37, 4, 16, false, Padding::kRight, true, 0.0});
}
TEST(MhaGpu, MatchesCpu_OptInSmem_B3_T100_H2_D64_Causal_NoLengths) {
  RunMhaParity({3, 100, 2, 64, true, Padding::kLeft, false, 0.1});
}

// MhaCudaSupports must cover the forward kernel's shared memory too: for a very short, very wide
// head the forward needs more than the backward (T = 2, dh = 8000: 384 KB vs 128 KB), and a
// model that passed the check would otherwise fail its first forward.
TEST(MhaGpu, SupportsChecksForwardSharedMemoryToo_T2_D8000) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  EXPECT_EQ(MhaCudaSupports(2, 8000).code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(MhaCudaSupports(50, 64).ok());
}

}  // namespace
}  // namespace ips::kernels
