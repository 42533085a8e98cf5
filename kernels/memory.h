// Memory for the callers of kernels/: buffers owned on a Device, page-locked host staging
// buffers, and copies between host and device on a Context's stream. Kernels never allocate
// (kernels/context.h); models and trainers size their buffers once with these and pass the
// pointers in.
//
// On the CPU a "device" buffer is ordinary 64-byte-aligned host memory and every copy is a
// memmove, so code written against these functions runs unchanged on either device (the CPU run
// exercises the same staging logic as the CUDA one). Every buffer is zero-filled on allocation.
// Errors: INTERNAL naming the failing CUDA call; UNIMPLEMENTED for CUDA in a build without it.
#ifndef IPS_KERNELS_MEMORY_H_
#define IPS_KERNELS_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

// `bytes` zero-filled bytes on `device` (CPU: aligned host memory). nullptr for bytes == 0.
StatusOr<void*> AllocateOn(Device device, size_t bytes);
void FreeOn(Device device, void* p);
// `bytes` zero-filled host bytes, page-locked (cudaMallocHost) when `pinned` and CUDA is built,
// so that copies to the device run at full speed and asynchronously; ordinary memory otherwise.
StatusOr<void*> AllocateHost(size_t bytes, bool pinned);
void FreeHost(void* p, bool pinned);

// Copies on ctx's device and stream. CopyToHost waits for the stream, so the host may read the
// result on return; CopyToDevice, CopyOnDevice and ZeroOnDevice are ordered on the stream (a
// host source must stay unchanged until the stream has passed the copy: call Synchronize before
// overwriting it). On the CPU all of them are memmove/memset.
Status CopyToDevice(const Context& ctx, void* device_dst, const void* host_src, size_t bytes);
Status CopyToHost(const Context& ctx, void* host_dst, const void* device_src, size_t bytes);
Status CopyOnDevice(const Context& ctx, void* device_dst, const void* device_src, size_t bytes);
Status ZeroOnDevice(const Context& ctx, void* device_dst, size_t bytes);
// Waits until all work queued on ctx's stream is done (CPU: nothing to wait for).
Status Synchronize(const Context& ctx);

// An owned, zero-filled array of n elements of T on one device. Move-only.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  static StatusOr<Buffer> Create(Device device, int64_t n) {
    Buffer b;
    b.device_ = device;
    b.size_ = n;
    IPS_ASSIGN_OR_RETURN(void* p, AllocateOn(device, static_cast<size_t>(n) * sizeof(T)));
    b.data_ = static_cast<T*>(p);
    return b;
  }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(device_, o.device_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { FreeOn(device_, data_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }
  Device device() const { return device_; }

 private:
  Device device_ = Device::kCpu;
  T* data_ = nullptr;
  int64_t size_ = 0;
};

// Creates every (buffer, element count) of `buffers` on `device` (a model's buffers at Create).
template <typename T>
Status CreateBuffers(Device device, std::initializer_list<std::pair<Buffer<T>*, int64_t>> buffers) {
  for (const auto& [buffer, n] : buffers) {
    IPS_ASSIGN_OR_RETURN(*buffer, Buffer<T>::Create(device, n));
  }
  return Status::Ok();
}

// An owned, zero-filled host array of n elements of T, page-locked when asked (see
// AllocateHost). Move-only.
template <typename T>
class HostBuffer {
 public:
  HostBuffer() = default;
  static StatusOr<HostBuffer> Create(int64_t n, bool pinned) {
    HostBuffer b;
    b.pinned_ = pinned;
    b.size_ = n;
    IPS_ASSIGN_OR_RETURN(void* p, AllocateHost(static_cast<size_t>(n) * sizeof(T), pinned));
    b.data_ = static_cast<T*>(p);
    return b;
  }
  HostBuffer(HostBuffer&& o) noexcept { *this = std::move(o); }
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    std::swap(pinned_, o.pinned_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { FreeHost(data_, pinned_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }
  bool pinned() const { return pinned_; }

 private:
  bool pinned_ = false;
  T* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace ips::kernels

#endif  // IPS_KERNELS_MEMORY_H_
