// CUDA vs CPU parity for GRU / AUGRU / LSTM forward and backward on identical random inputs:
// the persistent kernels (H = 36, H = 128; LSTM H = 128 and everything on an A100 may take the
// per-step path when W_hh does not fit in shared memory) and the per-step path (H = 160),
// T = 50, B = 67 and 1000, lengths 0, 1, T and random. Device outputs are poisoned with NaN before
// each call.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "kernels/recurrent.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

// Device copy of a host vector (or an uninitialised, NaN-poisoned buffer of n bytes).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMalloc(&ptr_, bytes_), cudaSuccess);
      EXPECT_EQ(cudaMemset(ptr_, 0xff, bytes_), cudaSuccess);  // all-ones bits = NaN floats
    }
  }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& v) : DeviceBuffer(v.size() * sizeof(T)) {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(ptr_, v.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  std::vector<float> Download() const {
    std::vector<float> v(bytes_ / sizeof(float));
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(v.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return v;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

const char* CellName(RnnCell c) {
  return c == RnnCell::kGru ? "gru" : c == RnnCell::kAugru ? "augru" : "lstm";
}

// cell, hidden, batch (67: one row per block; 1000: several rows per block on any GPU).
using Param = std::tuple<RnnCell, int, int>;
class RnnCudaParity : public ::testing::TestWithParam<Param> {};

TEST_P(RnnCudaParity, ForwardBackwardMatchCpu_T50_I36_varlen) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device visible";
  const auto [cell, hidden, batch] = GetParam();
  const int64_t B = batch, T = 50, I = 36, H = hidden, GH = RnnGates(cell) * H;
  const RnnShape shape{cell, B, T, I, H};
  Rng rng(static_cast<uint64_t>(H) * 7 + static_cast<int>(cell));
  std::vector<int32_t> lengths(B);
  for (auto& l : lengths) l = static_cast<int32_t>(rng.UniformInt(T + 1));
  lengths[0] = 0, lengths[1] = 1, lengths[2] = T, lengths[B - 1] = T;
  const float k = 1.0f / std::sqrt(static_cast<float>(H));
  std::vector<float> x(B * T * I), w_ih(GH * I), w_hh(GH * H), b_ih(GH), b_hh(GH), att(B * T),
      h0(B * H), c0(B * H), d_states(B * T * H), d_final_h(B * H), d_final_c(B * H);
  testing::FillUniform(x, rng);
  testing::FillUniform(w_ih, rng, -k, k);
  testing::FillUniform(w_hh, rng, -k, k);
  testing::FillUniform(b_ih, rng, -k, k);
  testing::FillUniform(b_hh, rng, -k, k);
  testing::FillUniform(att, rng, 0.f, 1.f);
  testing::FillUniform(h0, rng, -0.5f, 0.5f);
  testing::FillUniform(c0, rng, -0.5f, 0.5f);
  testing::FillUniform(d_states, rng);
  testing::FillUniform(d_final_h, rng);
  testing::FillUniform(d_final_c, rng);
  const bool lstm = cell == RnnCell::kLstm, augru = cell == RnnCell::kAugru;

  // CPU.
  std::vector<float> states(B * T * H), final_h(B * H), final_c(B * H),
      reserve(RnnReserveBytes<float>(shape) / sizeof(float));
  std::vector<unsigned char> ws(
      std::max(RnnForwardWorkspaceBytes<float>(shape), RnnBackwardWorkspaceBytes<float>(shape)));
  std::vector<float> d_x(B * T * I), d_w_ih(GH * I), d_w_hh(GH * H), d_b_ih(GH), d_b_hh(GH),
      d_att(B * T), d_h0(B * H), d_c0(B * H);
  ThreadPool pool(2);
  Context cpu;
  cpu.pool = &pool;
  RnnForwardArgs<float> f;
  f.shape = shape;
  f.x = x.data(), f.lengths = lengths.data(), f.w_ih = w_ih.data(), f.w_hh = w_hh.data();
  f.b_ih = b_ih.data(), f.b_hh = b_hh.data(), f.att = augru ? att.data() : nullptr;
  f.h0 = h0.data(), f.c0 = lstm ? c0.data() : nullptr, f.states = states.data();
  f.final_h = final_h.data(), f.final_c = lstm ? final_c.data() : nullptr;
  f.reserve = reserve.data(), f.workspace = ws.data();
  ASSERT_TRUE(RnnForward(cpu, f).ok());
  RnnBackwardArgs<float> g;
  g.shape = shape;
  g.x = f.x, g.lengths = f.lengths, g.w_ih = f.w_ih, g.w_hh = f.w_hh, g.att = f.att, g.h0 = f.h0;
  g.c0 = f.c0, g.states = f.states, g.reserve = f.reserve, g.d_states = d_states.data();
  g.d_final_h = d_final_h.data(), g.d_final_c = lstm ? d_final_c.data() : nullptr;
  g.d_x = d_x.data(), g.d_w_ih = d_w_ih.data(), g.d_w_hh = d_w_hh.data();
  g.d_b_ih = d_b_ih.data(), g.d_b_hh = d_b_hh.data(), g.d_att = augru ? d_att.data() : nullptr;
  g.d_h0 = d_h0.data(), g.d_c0 = lstm ? d_c0.data() : nullptr, g.workspace = ws.data();
  ASSERT_TRUE(RnnBackward(cpu, g).ok());

  // CUDA on the same inputs.
  DeviceBuffer dx(x), dlen(lengths), dw_ih(w_ih), dw_hh(w_hh), db_ih(b_ih), db_hh(b_hh), datt(att),
      dh0(h0), dc0(c0), dd_states(d_states), dd_final_h(d_final_h), dd_final_c(d_final_c);
  DeviceBuffer dstates(states.size() * 4), dfinal_h(final_h.size() * 4),
      dfinal_c(final_c.size() * 4), dreserve(reserve.size() * 4), dws(ws.size());
  DeviceBuffer gd_x(d_x.size() * 4), gd_w_ih(d_w_ih.size() * 4), gd_w_hh(d_w_hh.size() * 4),
      gd_b_ih(GH * 4), gd_b_hh(GH * 4), gd_att(B * T * 4), gd_h0(B * H * 4), gd_c0(B * H * 4);
  Context gpu;
  gpu.device = Device::kCuda;
  RnnForwardArgs<float> fd = f;
  fd.x = dx.get<float>(), fd.lengths = dlen.get<int32_t>(), fd.w_ih = dw_ih.get<float>();
  fd.w_hh = dw_hh.get<float>(), fd.b_ih = db_ih.get<float>(), fd.b_hh = db_hh.get<float>();
  fd.att = augru ? datt.get<float>() : nullptr, fd.h0 = dh0.get<float>();
  fd.c0 = lstm ? dc0.get<float>() : nullptr, fd.states = dstates.get<float>();
  fd.final_h = dfinal_h.get<float>(), fd.final_c = lstm ? dfinal_c.get<float>() : nullptr;
  fd.reserve = dreserve.get<float>(), fd.workspace = dws.get<void>();
  Status st = RnnForward(gpu, fd);
  ASSERT_TRUE(st.ok()) << st.ToString();
  RnnBackwardArgs<float> gd = g;
  gd.x = fd.x, gd.lengths = fd.lengths, gd.w_ih = fd.w_ih, gd.w_hh = fd.w_hh, gd.att = fd.att;
  gd.h0 = fd.h0, gd.c0 = fd.c0, gd.states = fd.states, gd.reserve = fd.reserve;
  gd.d_states = dd_states.get<float>(), gd.d_final_h = dd_final_h.get<float>();
  gd.d_final_c = lstm ? dd_final_c.get<float>() : nullptr;
  gd.d_x = gd_x.get<float>(), gd.d_w_ih = gd_w_ih.get<float>(), gd.d_w_hh = gd_w_hh.get<float>();
  gd.d_b_ih = gd_b_ih.get<float>(), gd.d_b_hh = gd_b_hh.get<float>();
  gd.d_att = augru ? gd_att.get<float>() : nullptr, gd.d_h0 = gd_h0.get<float>();
  gd.d_c0 = lstm ? gd_c0.get<float>() : nullptr, gd.workspace = dws.get<void>();
  st = RnnBackward(gpu, gd);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const testing::Tolerance fwd{1e-5, 1e-4}, bwd{2e-4, 1e-3}, wgrad{1e-3, 1e-3};
  const std::string name =
      std::string(CellName(cell)) + " H=" + std::to_string(H) + " B=" + std::to_string(B);
  EXPECT_TRUE(testing::AllClose(dstates.Download(), states, fwd)) << name << " states";
  EXPECT_TRUE(testing::AllClose(dfinal_h.Download(), final_h, fwd)) << name << " final_h";
  if (lstm) {
    EXPECT_TRUE(testing::AllClose(dfinal_c.Download(), final_c, fwd)) << name;
  }
  EXPECT_TRUE(testing::AllClose(gd_x.Download(), d_x, bwd)) << name << " d_x";
  EXPECT_TRUE(testing::AllClose(gd_h0.Download(), d_h0, bwd)) << name << " d_h0";
  EXPECT_TRUE(testing::AllClose(gd_w_ih.Download(), d_w_ih, wgrad)) << name << " d_w_ih";
  EXPECT_TRUE(testing::AllClose(gd_w_hh.Download(), d_w_hh, wgrad)) << name << " d_w_hh";
  EXPECT_TRUE(testing::AllClose(gd_b_ih.Download(), d_b_ih, wgrad)) << name << " d_b_ih";
  EXPECT_TRUE(testing::AllClose(gd_b_hh.Download(), d_b_hh, wgrad)) << name << " d_b_hh";
  if (augru) {
    EXPECT_TRUE(testing::AllClose(gd_att.Download(), d_att, bwd)) << name << " d_att";
  }
  if (lstm) {
    EXPECT_TRUE(testing::AllClose(gd_c0.Download(), d_c0, bwd)) << name << " d_c0";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cells, RnnCudaParity,
    ::testing::Combine(::testing::Values(RnnCell::kGru, RnnCell::kAugru, RnnCell::kLstm),
                       ::testing::Values(36, 128, 160), ::testing::Values(67, 1000)),
    [](const ::testing::TestParamInfo<Param>& info) {
      return std::string(CellName(std::get<0>(info.param))) + "_H" +
             std::to_string(std::get<1>(info.param)) + "_B" +
             std::to_string(std::get<2>(info.param));
    });

}  // namespace
}  // namespace ips::kernels
