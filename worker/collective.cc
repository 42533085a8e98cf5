#include "worker/collective.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "ps/transport.h"

namespace ips {
namespace {

using ps::MpiStatus;
using ps::WaitWithoutSpinning;

// MPI counts are int: larger buffers go in chunks.
constexpr int64_t kMaxChunk = int64_t{1} << 30;

class MpiCollective : public Collective {
 public:
  explicit MpiCollective(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCollective() override {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  Status AllReduceSum(float* data, int64_t n) override {
    if (n < 0 || (n > 0 && data == nullptr))
      return InvalidArgumentError("all-reduce: bad buffer (n = " + std::to_string(n) + ")");
    for (int64_t b = 0; b < n; b += kMaxChunk) {
      const int c = static_cast<int>(std::min(kMaxChunk, n - b));
      MPI_Request req;
      IPS_RETURN_IF_ERROR(
          MpiStatus(MPI_Iallreduce(MPI_IN_PLACE, data + b, c, MPI_FLOAT, MPI_SUM, comm_, &req),
                    "MPI_Iallreduce"));
      // Sleeps of at most 50 us: an all-reduce is on the step's critical path.
      IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Iallreduce", 50));
    }
    return Status::Ok();
  }

  Status Broadcast(void* data, int64_t bytes, int root) override {
    if (bytes < 0 || (bytes > 0 && data == nullptr))
      return InvalidArgumentError("broadcast: bad buffer");
    if (root < 0 || root >= size_)
      return InvalidArgumentError("broadcast: root " + std::to_string(root) + " out of range");
    auto* p = static_cast<char*>(data);
    for (int64_t b = 0; b < bytes; b += kMaxChunk) {
      const int c = static_cast<int>(std::min(kMaxChunk, bytes - b));
      MPI_Request req;
      IPS_RETURN_IF_ERROR(
          MpiStatus(MPI_Ibcast(p + b, c, MPI_BYTE, root, comm_, &req), "MPI_Ibcast"));
      IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Ibcast", 50));
    }
    return Status::Ok();
  }

  Status Barrier() override {
    MPI_Request req;
    IPS_RETURN_IF_ERROR(MpiStatus(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier"));
    return WaitWithoutSpinning(&req, "MPI_Ibarrier");
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace

Status Collective::AllReduceMean(float* data, int64_t n) {
  IPS_RETURN_IF_ERROR(AllReduceSum(data, n));
  const float inv = 1.0f / static_cast<float>(size());
  for (int64_t i = 0; i < n; ++i) data[i] *= inv;
  return Status::Ok();
}

StatusOr<std::unique_ptr<Collective>> CreateMpiCollective(MPI_Comm comm) {
  MPI_Comm dup;
  MPI_Request req;
  IPS_RETURN_IF_ERROR(MpiStatus(MPI_Comm_idup(comm, &dup, &req), "MPI_Comm_idup"));
  IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Comm_idup"));
  return std::unique_ptr<Collective>(new MpiCollective(dup));
}

#ifndef IPS_WITH_NCCL
StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(MPI_Comm comm, int device) {
  return UnimplementedError("NCCL collective: this build has no NCCL (needs IPS_CUDA and nccl.h)");
}
bool NcclBuilt() { return false; }
#endif

Status CheckReplicasEqual(Collective* collective, const float* weights, int64_t n, int64_t step) {
  if (collective == nullptr) return InvalidArgumentError("replica check: null collective");
  uint32_t crc = Crc32c(weights, static_cast<size_t>(n) * sizeof(float));
  uint32_t root_crc = crc;
  IPS_RETURN_IF_ERROR(collective->Broadcast(&root_crc, sizeof(root_crc), 0));
  // Exact in float: counts of ranks.
  float differs = root_crc == crc ? 0.0f : 1.0f;
  IPS_RETURN_IF_ERROR(collective->AllReduceSum(&differs, 1));
  if (differs > 0)
    return DataLossError(
        "replica check at step " + std::to_string(step) + ": dense weights of " +
        std::to_string(static_cast<int>(differs)) + " of " + std::to_string(collective->size()) +
        " workers differ from worker 0 (CRC32C of " + std::to_string(n) + " floats)");
  return Status::Ok();
}

}  // namespace ips
