// CUDA parity tests of kernels/embedding.h: each CUDA op against the CPU op (the shipped CPU
// kernels, float) on the same random inputs, device outputs poisoned with NaN first. Skips
// when no CUDA device is visible. Built only when IPS_WITH_CUDA.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/random.h"
#include "kernels/embedding.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::FillUniform;
using testing::Poison;

// Device copy of a host vector; freed on scope exit. Failures are test failures (ADD_FAILURE),
// and leave ptr null so the op under test reports a null-pointer error instead of crashing.
template <typename T>
class DeviceVec {
 public:
  explicit DeviceVec(const std::vector<T>& host) : n_(host.size()) {
    if (n_ == 0) return;
    if (cudaMalloc(&ptr_, n_ * sizeof(T)) != cudaSuccess) {
      ADD_FAILURE() << "cudaMalloc of " << n_ * sizeof(T) << " bytes failed";
      ptr_ = nullptr;
      return;
    }
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceVec() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> ToHost() const {
    std::vector<T> h(n_);
    if (n_ > 0) {
      EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  }

 private:
  size_t n_ = 0;
  T* ptr_ = nullptr;
};

std::vector<float> NaNs(size_t n) { return std::vector<float>(n, std::nanf("")); }

class EmbeddingGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
  const Context gpu_{Device::kCuda, nullptr, nullptr};
  const Context cpu_{};
};

struct Batch {
  int64_t batch, max_len;
  std::vector<int64_t> padded_idx, lengths, jagged_idx, offsets;
};

// Lengths include 0, 1 and max_len; padding holds garbage; keys Zipf-like (k^2 skew).
Batch MakeBatch(Rng& rng, int64_t batch, int64_t max_len, int64_t rows) {
  Batch b{batch, max_len, std::vector<int64_t>(batch * max_len, -1), {}, {}, {0}};
  for (int64_t i = 0; i < batch; ++i) {
    int64_t len = static_cast<int64_t>(rng.UniformInt(max_len + 1));
    if (i == 0) len = 0;
    if (i == 1) len = 1;
    if (i == 2) len = max_len;
    b.lengths.push_back(len);
    for (int64_t t = 0; t < len; ++t) {
      const double u = rng.Uniform();
      const int64_t r = std::min<int64_t>(rows - 1, static_cast<int64_t>(u * u * rows));
      b.padded_idx[i * max_len + t] = r;
      b.jagged_idx.push_back(r);
    }
    b.offsets.push_back(static_cast<int64_t>(b.jagged_idx.size()));
  }
  return b;
}

// Dims cover every vector width the kernels pick: 18 (float2), 36 and 64 (float4), 7 (scalar),
// and rows wider than one 32-thread group's vectors, so that a lane walks several vectors of a
// row: 130 (float2, 65 vectors) and 132 (float4, 33 vectors).
class EmbeddingGpuDimTest : public EmbeddingGpuTest, public ::testing::WithParamInterface<int> {};

TEST_P(EmbeddingGpuDimTest, ForwardMatchesCpu_GatherAndPooled) {
  const int64_t dim = GetParam(), rows = 20000;
  Rng rng(100 + dim);
  std::vector<float> table(rows * dim);
  FillUniform(table, rng);
  const Batch b = MakeBatch(rng, 300, 50, rows);
  const int64_t nnz = b.offsets.back();
  DeviceVec<float> d_table(table);
  DeviceVec<int64_t> d_pidx(b.padded_idx), d_len(b.lengths), d_jidx(b.jagged_idx), d_off(b.offsets);

  {  // Gather padded.
    std::vector<float> want(b.batch * b.max_len * dim);
    Poison(want);
    GatherPaddedArgs<float> a{table.data(),     rows,    dim,       b.padded_idx.data(),
                              b.lengths.data(), b.batch, b.max_len, want.data()};
    ASSERT_TRUE(GatherPadded(cpu_, a).ok());
    DeviceVec<float> d_out(NaNs(want.size()));
    a.table = d_table.get();
    a.indices = d_pidx.get();
    a.lengths = d_len.get();
    a.out = d_out.get();
    ASSERT_TRUE(GatherPadded(gpu_, a).ok());
    EXPECT_TRUE(AllClose(d_out.ToHost(), want, {0.0, 0.0}));
  }
  {  // Gather jagged.
    std::vector<float> want(nnz * dim);
    Poison(want);
    GatherJaggedArgs<float> a{table.data(),     rows,    dim, b.jagged_idx.data(),
                              b.offsets.data(), b.batch, nnz, want.data()};
    ASSERT_TRUE(GatherJagged(cpu_, a).ok());
    DeviceVec<float> d_out(NaNs(want.size()));
    a.table = d_table.get();
    a.indices = d_jidx.get();
    a.offsets = d_off.get();
    a.out = d_out.get();
    ASSERT_TRUE(GatherJagged(gpu_, a).ok());
    EXPECT_TRUE(AllClose(d_out.ToHost(), want, {0.0, 0.0}));
  }
  for (Pooling mode : {Pooling::kSum, Pooling::kMean}) {
    SCOPED_TRACE(mode == Pooling::kSum ? "sum" : "mean");
    std::vector<float> want(b.batch * dim);
    Poison(want);
    PooledPaddedArgs<float> a{table.data(), rows,      dim,  b.padded_idx.data(), b.lengths.data(),
                              b.batch,      b.max_len, mode, want.data()};
    ASSERT_TRUE(PooledPadded(cpu_, a).ok());
    DeviceVec<float> d_out(NaNs(want.size()));
    a.table = d_table.get();
    a.indices = d_pidx.get();
    a.lengths = d_len.get();
    a.out = d_out.get();
    ASSERT_TRUE(PooledPadded(gpu_, a).ok());
    EXPECT_TRUE(AllClose(d_out.ToHost(), want, {1e-5, 1e-5}));

    std::vector<float> jwant(b.batch * dim);
    Poison(jwant);
    PooledJaggedArgs<float> j{table.data(), rows, dim,  b.jagged_idx.data(), b.offsets.data(),
                              b.batch,      nnz,  mode, jwant.data()};
    ASSERT_TRUE(PooledJagged(cpu_, j).ok());
    DeviceVec<float> d_jout(NaNs(jwant.size()));
    j.table = d_table.get();
    j.indices = d_jidx.get();
    j.offsets = d_off.get();
    j.out = d_jout.get();
    ASSERT_TRUE(PooledJagged(gpu_, j).ok());
    EXPECT_TRUE(AllClose(d_jout.ToHost(), jwant, {1e-5, 1e-5}));
  }
}

TEST_P(EmbeddingGpuDimTest, BackwardMatchesCpu_ScatterPaddedPooled) {
  const int64_t dim = GetParam(), rows = 3000;
  Rng rng(200 + dim);
  const Batch b = MakeBatch(rng, 256, 50, rows);
  const int64_t nnz = b.offsets.back();
  DeviceVec<int64_t> d_pidx(b.padded_idx), d_len(b.lengths), d_jidx(b.jagged_idx), d_off(b.offsets);
  // Atomic summation order differs from the CPU's: compare with a tolerance.
  const testing::Tolerance tol{1e-4, 1e-4};
  {  // Flat scatter-add (jagged gather backward).
    std::vector<float> g(nnz * dim), want(rows * dim);
    FillUniform(g, rng);
    Poison(want);
    ScatterAddArgs<float> a{g.data(), b.jagged_idx.data(), nnz, dim, rows, want.data()};
    ASSERT_TRUE(ScatterAdd(cpu_, a).ok());
    DeviceVec<float> d_g(g), d_out(NaNs(want.size()));
    a.grad_rows = d_g.get();
    a.inverse = d_jidx.get();
    a.grad_unique = d_out.get();
    ASSERT_TRUE(ScatterAdd(gpu_, a).ok());
    EXPECT_TRUE(AllClose(d_out.ToHost(), want, tol));
  }
  {  // Padded gather backward.
    std::vector<float> g(b.batch * b.max_len * dim), want(rows * dim);
    FillUniform(g, rng);
    Poison(want);
    GatherPaddedBackwardArgs<float> a{g.data(), b.padded_idx.data(), b.lengths.data(),
                                      b.batch,  b.max_len,           dim,
                                      rows,     want.data()};
    ASSERT_TRUE(GatherPaddedBackward(cpu_, a).ok());
    DeviceVec<float> d_g(g), d_out(NaNs(want.size()));
    a.grad_out = d_g.get();
    a.indices = d_pidx.get();
    a.lengths = d_len.get();
    a.grad_table = d_out.get();
    ASSERT_TRUE(GatherPaddedBackward(gpu_, a).ok());
    EXPECT_TRUE(AllClose(d_out.ToHost(), want, tol));
  }
  for (Pooling mode : {Pooling::kSum, Pooling::kMean}) {
    SCOPED_TRACE(mode == Pooling::kSum ? "sum" : "mean");
    std::vector<float> g(b.batch * dim), want(rows * dim);
    FillUniform(g, rng);
    DeviceVec<float> d_g(g);
    Poison(want);
    PooledPaddedBackwardArgs<float> a{
        g.data(), b.padded_idx.data(), b.lengths.data(), b.batch, b.max_len, dim, mode,
        rows,     want.data()};
    ASSERT_TRUE(PooledPaddedBackward(cpu_, a).ok());
    DeviceVec<float> d_out(NaNs(want.size()));
    a.grad_out = d_g.get();
    a.indices = d_pidx.get();
    a.lengths = d_len.get();
    a.grad_table = d_out.get();
    ASSERT_TRUE(PooledPaddedBackward(gpu_, a).ok());
    EXPECT_TRUE(AllClose(d_out.ToHost(), want, tol));

    Poison(want);
    PooledJaggedBackwardArgs<float> j{
        g.data(), b.jagged_idx.data(), b.offsets.data(), b.batch, nnz, dim, mode,
        rows,     want.data()};
    ASSERT_TRUE(PooledJaggedBackward(cpu_, j).ok());
    DeviceVec<float> d_jout(NaNs(want.size()));
    j.grad_out = d_g.get();
    j.indices = d_jidx.get();
    j.offsets = d_off.get();
    j.grad_table = d_jout.get();
    ASSERT_TRUE(PooledJaggedBackward(gpu_, j).ok());
    EXPECT_TRUE(AllClose(d_jout.ToHost(), want, tol));
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, EmbeddingGpuDimTest, ::testing::Values(7, 18, 36, 64, 130, 132),
                         [](const auto& info) { return "D" + std::to_string(info.param); });

// CUDA dedup is sort-based, so it must equal the CPU sort reference exactly.
TEST_F(EmbeddingGpuTest, DedupMatchesCpuSortReference_ZipfAllUniqueEdgeSizes) {
  Rng rng(300);
  for (int64_t n : {0, 1, 2, 1000, 25600, 300000}) {
    for (int kind = 0; kind < 3; ++kind) {
      SCOPED_TRACE("n=" + std::to_string(n) + " kind=" + std::to_string(kind));
      std::vector<int64_t> keys(n);
      for (int64_t i = 0; i < n; ++i) {
        const double u = rng.Uniform();
        if (kind == 0) keys[i] = static_cast<int64_t>(u * u * u * 5000) - 2500;  // dups, negatives
        if (kind == 1) keys[i] = static_cast<int64_t>(Mix64(i + 1));  // all unique, full range
        if (kind == 2) keys[i] = -9;
      }
      std::vector<int64_t> want_unique(n), want_inverse(n);
      int64_t want_u = -1;
      DedupArgs ref{keys.data(), n, want_unique.data(), want_inverse.data(), &want_u};
      ASSERT_TRUE(DedupKeysSortCpu(ref).ok());
      want_unique.resize(want_u);

      auto ws_bytes = DedupWorkspaceBytes(gpu_, n);
      ASSERT_TRUE(ws_bytes.ok()) << ws_bytes.status();
      std::vector<char> ws_init(std::max<size_t>(*ws_bytes, 1), 0);
      DeviceVec<char> d_ws(ws_init);
      DeviceVec<int64_t> d_keys(keys), d_unique(std::vector<int64_t>(n, -77)),
          d_inverse(std::vector<int64_t>(n, -77)), d_u(std::vector<int64_t>{-1});
      DedupArgs a{d_keys.get(), n,          d_unique.get(), d_inverse.get(),
                  d_u.get(),    d_ws.get(), *ws_bytes};
      ASSERT_TRUE(DedupKeys(gpu_, a).ok());
      const int64_t u = d_u.ToHost()[0];
      ASSERT_EQ(u, want_u);
      std::vector<int64_t> unique = d_unique.ToHost();
      unique.resize(u);
      EXPECT_EQ(unique, want_unique);
      EXPECT_EQ(d_inverse.ToHost(), want_inverse);
    }
  }
}

TEST_F(EmbeddingGpuTest, DedupRejectsTooSmallWorkspace) {
  std::vector<int64_t> keys = {3, 1, 3};
  DeviceVec<int64_t> d_keys(keys), d_unique(keys), d_inverse(keys), d_u(std::vector<int64_t>{0});
  DedupArgs a{d_keys.get(), 3, d_unique.get(), d_inverse.get(), d_u.get(), nullptr, 0};
  EXPECT_EQ(DedupKeys(gpu_, a).code(), StatusCode::kInvalidArgument);
}

TEST_F(EmbeddingGpuTest, DoubleIsCpuOnly) {
  std::vector<double> table(8, 1.0), out(8);
  std::vector<int64_t> idx = {0, 1}, len = {2};
  GatherPaddedArgs<double> a{table.data(), 4, 2, idx.data(), len.data(), 1, 2, out.data()};
  EXPECT_EQ(GatherPadded(gpu_, a).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace ips::kernels
