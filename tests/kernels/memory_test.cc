// kernels/memory.h: buffers are zero-filled and sized, copies move the bytes both ways on the
// CPU (the path every CPU model run takes through the same staging code as CUDA), move-only
// ownership, and CUDA requests are refused cleanly where there is no CUDA (and, where there is
// a device, round-trip through it).
#include "kernels/memory.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace ips::kernels {
namespace {

TEST(Memory, CpuBuffersAreZeroedAndCopiesRoundTrip) {
  auto b = Buffer<float>::Create(Device::kCpu, 1000);
  ASSERT_OK(b.status());
  ASSERT_EQ(b->size(), 1000);
  for (int64_t i = 0; i < b->size(); ++i) ASSERT_EQ(b->data()[i], 0.0f);
  std::vector<float> src(1000), back(1000, -1.0f);
  std::iota(src.begin(), src.end(), 0.5f);
  const Context ctx;
  ASSERT_OK(CopyToDevice(ctx, b->data(), src.data(), 1000 * sizeof(float)));
  auto c = Buffer<float>::Create(Device::kCpu, 1000);
  ASSERT_OK(c.status());
  ASSERT_OK(CopyOnDevice(ctx, c->data(), b->data(), 1000 * sizeof(float)));
  ASSERT_OK(CopyToHost(ctx, back.data(), c->data(), 1000 * sizeof(float)));
  EXPECT_EQ(back, src);
  ASSERT_OK(ZeroOnDevice(ctx, c->data(), 10 * sizeof(float)));
  EXPECT_EQ(c->data()[9], 0.0f);
  EXPECT_EQ(c->data()[10], src[10]);
  ASSERT_OK(Synchronize(ctx));

  Buffer<float> moved = std::move(*c);
  EXPECT_EQ(moved.size(), 1000);
  EXPECT_EQ(moved.data()[10], src[10]);

  auto h = HostBuffer<int64_t>::Create(7, /*pinned=*/false);
  ASSERT_OK(h.status());
  EXPECT_FALSE(h->pinned());
  for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(h->data()[i], 0);
  auto empty = Buffer<double>::Create(Device::kCpu, 0);
  ASSERT_OK(empty.status());
  EXPECT_EQ(empty->data(), nullptr);
}

TEST(Memory, CudaWithoutCudaIsUnimplementedAndWithADeviceRoundTrips) {
  if (!CudaBuilt()) {
    EXPECT_EQ(Buffer<float>::Create(Device::kCuda, 4).status().code(), StatusCode::kUnimplemented);
    Context cuda;
    cuda.device = Device::kCuda;
    float x = 1;
    EXPECT_EQ(CopyToHost(cuda, &x, &x, sizeof(x)).code(), StatusCode::kUnimplemented);
    EXPECT_EQ(BindCudaDevice(0).code(), StatusCode::kUnimplemented);
    return;
  }
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "CUDA built but no device visible";
  auto d = Buffer<float>::Create(Device::kCuda, 300);
  ASSERT_OK(d.status());
  auto pinned = HostBuffer<float>::Create(300, /*pinned=*/true);
  ASSERT_OK(pinned.status());
  EXPECT_TRUE(pinned->pinned());
  for (int i = 0; i < 300; ++i) pinned->data()[i] = 0.25f * i - 7;
  Context cuda;
  cuda.device = Device::kCuda;
  std::vector<float> zeros(300, -1.0f), back(300, -1.0f);
  ASSERT_OK(CopyToHost(cuda, zeros.data(), d->data(), 300 * sizeof(float)));
  for (float z : zeros) ASSERT_EQ(z, 0.0f);
  ASSERT_OK(CopyToDevice(cuda, d->data(), pinned->data(), 300 * sizeof(float)));
  ASSERT_OK(CopyToHost(cuda, back.data(), d->data(), 300 * sizeof(float)));
  for (int i = 0; i < 300; ++i) ASSERT_EQ(back[i], pinned->data()[i]);
  EXPECT_OK(BindCudaDevice(0));
}

}  // namespace
}  // namespace ips::kernels
