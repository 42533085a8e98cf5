// The NCCL backend of Collective (worker/collective.h), compiled only when CUDA is on and NCCL
// is found (IPS_WITH_NCCL). Host buffers are staged through a device buffer; device buffers are
// reduced in place. The communicator is bootstrapped by MPI_Bcast of rank 0's ncclUniqueId.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <string>

#include "ps/transport.h"
#include "worker/collective.h"

namespace ips {
namespace {

Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return Status::Ok();
  return UnavailableError(std::string(what) + ": " + ncclGetErrorString(r));
}
Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return UnavailableError(std::string(what) + ": " + cudaGetErrorString(e));
}

class NcclCollective : public Collective {
 public:
  ~NcclCollective() override {
    if (staging_ != nullptr) cudaFree(staging_);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  Status Init(MPI_Comm comm, int device) {
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &size_);
    IPS_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
    IPS_RETURN_IF_ERROR(CudaStatus(cudaStreamCreate(&stream_), "cudaStreamCreate"));
    // Rank 0's id goes out with whether it could make one: a rank 0 that returned before the
    // broadcast would leave the others waiting in it.
    struct {
      int ok;
      ncclUniqueId id;
    } bootstrap{};
    Status made = Status::Ok();
    if (rank_ == 0) {
      made = NcclStatus(ncclGetUniqueId(&bootstrap.id), "ncclGetUniqueId");
      bootstrap.ok = made.ok() ? 1 : 0;
    }
    MPI_Request req;
    IPS_RETURN_IF_ERROR(ps::MpiStatus(
        MPI_Ibcast(&bootstrap, sizeof(bootstrap), MPI_BYTE, 0, comm, &req), "MPI_Ibcast(nccl id)"));
    IPS_RETURN_IF_ERROR(ps::WaitWithoutSpinning(&req, "MPI_Ibcast(nccl id)"));
    if (!made.ok()) return made;
    if (bootstrap.ok == 0) return UnavailableError("NCCL: rank 0 could not make the unique id");
    return NcclStatus(ncclCommInitRank(&comm_, size_, bootstrap.id, rank_), "ncclCommInitRank");
  }

  Status AllReduceSum(float* data, int64_t n) override {
    if (n < 0 || (n > 0 && data == nullptr))
      return InvalidArgumentError("all-reduce: bad buffer (n = " + std::to_string(n) + ")");
    if (n == 0) return Status::Ok();
    cudaPointerAttributes attr{};
    const bool on_device =
        cudaPointerGetAttributes(&attr, data) == cudaSuccess && attr.type == cudaMemoryTypeDevice;
    cudaGetLastError();  // clear the error a host pointer may leave
    float* buf = data;
    if (!on_device) {
      IPS_RETURN_IF_ERROR(Reserve(n));
      IPS_RETURN_IF_ERROR(CudaStatus(
          cudaMemcpyAsync(staging_, data, n * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync"));
      buf = staging_;
    }
    IPS_RETURN_IF_ERROR(NcclStatus(
        ncclAllReduce(buf, buf, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_),
        "ncclAllReduce"));
    if (!on_device)
      IPS_RETURN_IF_ERROR(CudaStatus(
          cudaMemcpyAsync(data, staging_, n * sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync"));
    return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  Status Broadcast(void* data, int64_t bytes, int root) override {
    if (bytes < 0 || (bytes > 0 && data == nullptr))
      return InvalidArgumentError("broadcast: bad buffer");
    if (bytes == 0) return Status::Ok();
    const int64_t n = (bytes + 3) / 4;
    IPS_RETURN_IF_ERROR(Reserve(n));
    IPS_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(staging_, data, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpy"));
    IPS_RETURN_IF_ERROR(NcclStatus(ncclBroadcast(staging_, staging_, static_cast<size_t>(bytes),
                                                 ncclChar, root, comm_, stream_),
                                   "ncclBroadcast"));
    IPS_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(data, staging_, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpy"));
    return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  Status Barrier() override {
    float x = 0;
    return AllReduceSum(&x, 1);
  }

 private:
  Status Reserve(int64_t n) {
    if (n <= staging_n_) return Status::Ok();
    if (staging_ != nullptr) cudaFree(staging_);
    staging_ = nullptr;
    IPS_RETURN_IF_ERROR(CudaStatus(
        cudaMalloc(reinterpret_cast<void**>(&staging_), n * sizeof(float)), "cudaMalloc"));
    staging_n_ = n;
    return Status::Ok();
  }

  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  float* staging_ = nullptr;
  int64_t staging_n_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(MPI_Comm comm, int device) {
  auto c = std::make_unique<NcclCollective>();
  IPS_RETURN_IF_ERROR(c->Init(comm, device));
  return std::unique_ptr<Collective>(std::move(c));
}

bool NcclBuilt() { return true; }

}  // namespace ips
