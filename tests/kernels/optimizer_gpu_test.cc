// CUDA parity tests of kernels/optimizer.h: SparseUpdate / DenseUpdate on the device against
// the CPU kernels (float) on the same random parameters, states and gradients, over several
// steps. Skips when no CUDA device is visible. Built only when IPS_WITH_CUDA.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "common/random.h"
#include "kernels/optimizer.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::FillUniform;

template <typename T>
class DeviceVec {
 public:
  explicit DeviceVec(const std::vector<T>& host) : n_(host.size()) {
    if (cudaMalloc(&ptr_, n_ * sizeof(T)) != cudaSuccess) {
      ADD_FAILURE() << "cudaMalloc failed";
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
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

 private:
  size_t n_ = 0;
  T* ptr_ = nullptr;
};

std::vector<OptimizerHyper> AllKinds() {
  return {OptimizerHyper::Sgd(0.05), OptimizerHyper::Adagrad(0.1), OptimizerHyper::Adam(0.01),
          OptimizerHyper::Ftrl(0.1, 1.0, 0.05, 0.5)};
}

// Valid random state: Adagrad's accumulator and Adam's v / FTRL's n positive.
void InitState(OptimizerKind kind, Rng& rng, std::vector<float>& s0, std::vector<float>& s1) {
  FillUniform(s0, rng, kind == OptimizerKind::kAdagrad ? 0.01f : -0.5f, 0.5f);
  FillUniform(s1, rng, 0.01f, 0.5f);
}

class OptimizerGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  }
};

TEST_F(OptimizerGpuTest, SparseUpdateMatchesCpu_AllKinds_D18_D64) {
  for (int64_t dim : {18, 64}) {
    for (const OptimizerHyper& h : AllKinds()) {
      SCOPED_TRACE(std::string(OptimizerKindName(h.kind)) + " D" + std::to_string(dim));
      const int64_t rows = 5000, num = 1200;
      Rng rng(7 + dim);
      std::vector<float> p(rows * dim), s0(rows * dim), s1(rows * dim);
      FillUniform(p, rng);
      InitState(h.kind, rng, s0, s1);
      DeviceVec<float> dp(p), ds0(s0), ds1(s1);
      for (int64_t step = 1; step <= 3; ++step) {
        std::vector<int64_t> perm(rows);
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t i = rows - 1; i > 0; --i) std::swap(perm[i], perm[rng.UniformInt(i + 1)]);
        std::vector<int64_t> idx(perm.begin(), perm.begin() + num);
        std::vector<float> g(num * dim);
        FillUniform(g, rng);
        SparseUpdateArgs<float> a;
        a.hyper = h;
        a.step = step;
        a.table_rows = rows;
        a.dim = dim;
        a.param = p.data();
        a.state0 = s0.data();
        a.state1 = s1.data();
        a.num_rows = num;
        a.row_indices = idx.data();
        a.grad = g.data();
        ASSERT_TRUE(SparseUpdate(Context{}, a).ok());
        DeviceVec<int64_t> didx(idx);
        DeviceVec<float> dg(g);
        a.param = dp.get();
        a.state0 = ds0.get();
        a.state1 = ds1.get();
        a.row_indices = didx.get();
        a.grad = dg.get();
        ASSERT_TRUE(SparseUpdate(Context{Device::kCuda}, a).ok());
        EXPECT_TRUE(AllClose(dp.ToHost(), p, {1e-5, 1e-4})) << "step " << step;
        EXPECT_TRUE(AllClose(ds0.ToHost(), s0, {1e-5, 1e-4}));
        EXPECT_TRUE(AllClose(ds1.ToHost(), s1, {1e-5, 1e-4}));
      }
    }
  }
}

TEST_F(OptimizerGpuTest, DenseUpdateMatchesCpu_AllKinds_Size100003) {
  const int64_t n = 100003;
  for (const OptimizerHyper& h : AllKinds()) {
    SCOPED_TRACE(OptimizerKindName(h.kind));
    Rng rng(11);
    std::vector<float> p(n), s0(n), s1(n), g(n);
    FillUniform(p, rng);
    InitState(h.kind, rng, s0, s1);
    DeviceVec<float> dp(p), ds0(s0), ds1(s1);
    for (int64_t step = 1; step <= 2; ++step) {
      FillUniform(g, rng);
      DeviceVec<float> dg(g);
      DenseUpdateArgs<float> a{h, step, n, p.data(), s0.data(), s1.data(), g.data()};
      ASSERT_TRUE(DenseUpdate(Context{}, a).ok());
      DenseUpdateArgs<float> d{h, step, n, dp.get(), ds0.get(), ds1.get(), dg.get()};
      ASSERT_TRUE(DenseUpdate(Context{Device::kCuda}, d).ok());
      EXPECT_TRUE(AllClose(dp.ToHost(), p, {1e-5, 1e-4}));
      EXPECT_TRUE(AllClose(ds0.ToHost(), s0, {1e-5, 1e-4}));
      EXPECT_TRUE(AllClose(ds1.ToHost(), s1, {1e-5, 1e-4}));
    }
  }
}

}  // namespace
}  // namespace ips::kernels
