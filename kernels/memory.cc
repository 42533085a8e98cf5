#include "kernels/memory.h"

#include <cstdlib>
#include <cstring>
#include <string>

#ifdef IPS_WITH_CUDA
#include "common/cuda_check.h"
#endif

namespace ips::kernels {
namespace {

constexpr size_t kAlignment = 64;

StatusOr<void*> AllocateAligned(size_t bytes) {
  if (bytes == 0) return static_cast<void*>(nullptr);
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr)
    return ResourceExhaustedError("out of host memory allocating " + std::to_string(bytes) +
                                  " bytes");
  std::memset(p, 0, bytes);
  return p;
}

#ifndef IPS_WITH_CUDA
Status NoCuda(const char* what) {
  return UnimplementedError(std::string(what) + " on CUDA: this build has no CUDA");
}
#else
cudaStream_t StreamOf(const Context& ctx) { return static_cast<cudaStream_t>(ctx.stream); }
#endif

}  // namespace

StatusOr<void*> AllocateOn(Device device, size_t bytes) {
  if (device == Device::kCpu) return AllocateAligned(bytes);
  if (bytes == 0) return static_cast<void*>(nullptr);
#ifdef IPS_WITH_CUDA
  void* p = nullptr;
  IPS_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
  // cudaMemset runs on the legacy default stream and returns early; waiting here keeps the fill
  // ahead of any later copy on a non-blocking stream (allocation happens once, at setup).
  cudaError_t e = cudaMemset(p, 0, bytes);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    cudaFree(p);
    IPS_CUDA_RETURN_IF_ERROR(e);
  }
  return p;
#else
  return NoCuda("AllocateOn");
#endif
}

void FreeOn(Device device, void* p) {
  if (p == nullptr) return;
  if (device == Device::kCpu) {
    std::free(p);
    return;
  }
#ifdef IPS_WITH_CUDA
  cudaFree(p);
#endif
}

StatusOr<void*> AllocateHost(size_t bytes, bool pinned) {
#ifdef IPS_WITH_CUDA
  if (pinned && bytes > 0) {
    void* p = nullptr;
    IPS_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, bytes));
    std::memset(p, 0, bytes);
    return p;
  }
#endif
  (void)pinned;
  return AllocateAligned(bytes);
}

void FreeHost(void* p, bool pinned) {
  if (p == nullptr) return;
#ifdef IPS_WITH_CUDA
  if (pinned) {
    cudaFreeHost(p);
    return;
  }
#endif
  (void)pinned;
  std::free(p);
}

namespace {

enum class Direction { kToDevice, kToHost, kOnDevice };

// The three copies: memmove on the CPU; on CUDA an async copy on ctx's stream, which a copy to
// the host then waits for.
Status Copy(const Context& ctx, void* dst, const void* src, size_t bytes, Direction direction,
            const char* what) {
  if (bytes == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    std::memmove(dst, src, bytes);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  const cudaMemcpyKind kind = direction == Direction::kToDevice ? cudaMemcpyHostToDevice
                              : direction == Direction::kToHost ? cudaMemcpyDeviceToHost
                                                                : cudaMemcpyDeviceToDevice;
  IPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, kind, StreamOf(ctx)));
  if (direction == Direction::kToHost)
    IPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(StreamOf(ctx)));
  return Status::Ok();
#else
  (void)direction;
  return NoCuda(what);
#endif
}

}  // namespace

Status CopyToDevice(const Context& ctx, void* device_dst, const void* host_src, size_t bytes) {
  return Copy(ctx, device_dst, host_src, bytes, Direction::kToDevice, "CopyToDevice");
}

Status CopyToHost(const Context& ctx, void* host_dst, const void* device_src, size_t bytes) {
  return Copy(ctx, host_dst, device_src, bytes, Direction::kToHost, "CopyToHost");
}

Status CopyOnDevice(const Context& ctx, void* device_dst, const void* device_src, size_t bytes) {
  return Copy(ctx, device_dst, device_src, bytes, Direction::kOnDevice, "CopyOnDevice");
}

Status ZeroOnDevice(const Context& ctx, void* device_dst, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    std::memset(device_dst, 0, bytes);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  IPS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(device_dst, 0, bytes, StreamOf(ctx)));
  return Status::Ok();
#else
  return NoCuda("ZeroOnDevice");
#endif
}

Status Synchronize(const Context& ctx) {
  if (ctx.device == Device::kCpu) return Status::Ok();
#ifdef IPS_WITH_CUDA
  IPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(StreamOf(ctx)));
  return Status::Ok();
#else
  return NoCuda("Synchronize");
#endif
}

}  // namespace ips::kernels
