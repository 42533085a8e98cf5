// Context: where a kernel runs. Every op in kernels/ takes a Context and its Args and dispatches
// to the CPU implementation (kernels/cpu/, always built) or the CUDA one (kernels/cuda/, built
// when IPS_WITH_CUDA). Calling a CUDA op in a build without CUDA returns UNIMPLEMENTED.
//
// Ops never allocate device memory themselves: callers pass outputs and any workspace, whose
// size an op reports through a `...WorkspaceBytes(args)` function where it needs one.
#ifndef IPS_KERNELS_CONTEXT_H_
#define IPS_KERNELS_CONTEXT_H_

#include <cstdint>

#include "common/status.h"

namespace ips {
class ThreadPool;
}

namespace ips::kernels {

enum class Device { kCpu, kCuda };

struct Context {
  Device device = Device::kCpu;
  // CPU: parallel loops run on this pool; nullptr runs them on the calling thread.
  ThreadPool* pool = nullptr;
  // CUDA: the cudaStream_t to launch on (nullptr = default stream).
  void* stream = nullptr;
};

// True when this binary was built with CUDA kernels.
bool CudaBuilt();
// True when CUDA is built and at least one device is visible (used by tests to GTEST_SKIP).
bool CudaDeviceAvailable();
// Makes device (local_rank mod the visible device count) current for the calling thread, so that
// the ranks of one host spread over its GPUs. UNIMPLEMENTED without CUDA; FAILED_PRECONDITION
// with no visible device.
Status BindCudaDevice(int local_rank);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CONTEXT_H_
