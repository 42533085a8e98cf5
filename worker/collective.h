// Collective: the dense-weight collectives among the worker ranks (all-reduce of gradients,
// broadcast of initial weights, barrier) behind one interface, with an MPI backend (always) and
// an NCCL backend (built when CUDA is on and NCCL is found: IPS_WITH_NCCL). It also owns the
// replica check: dense weights are replicated on every worker and must stay bit-identical, so
// CheckReplicasEqual compares a CRC32C of them across workers every N steps.
//
// No busy-polling: the MPI backend issues non-blocking collectives on its own communicator and
// completes them with WaitWithoutSpinning (ps/transport.h): MPI_Test plus a short sleep backoff.
//
// Thread safety: one thread calls a Collective at a time (the trainer's). Every method is
// collective over the Collective's ranks: all of them must call it, in the same order.
#ifndef IPS_WORKER_COLLECTIVE_H_
#define IPS_WORKER_COLLECTIVE_H_

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace ips {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // In place: data[i] = sum over ranks of data[i]. `data` is host memory (the NCCL backend also
  // accepts device memory). INVALID_ARGUMENT for n < 0 or null data with n > 0; INTERNAL (MPI)
  // or UNAVAILABLE (NCCL) naming the failing call.
  virtual Status AllReduceSum(float* data, int64_t n) = 0;
  // AllReduceSum, then divides by size() on the host: `data` must be host memory here.
  Status AllReduceMean(float* data, int64_t n);
  // Copies root's bytes[0, n) to every rank.
  virtual Status Broadcast(void* data, int64_t bytes, int root) = 0;
  virtual Status Barrier() = 0;
};

// MPI backend over a duplicate of `comm` (collective over `comm`). INTERNAL on MPI errors.
StatusOr<std::unique_ptr<Collective>> CreateMpiCollective(MPI_Comm comm);

// NCCL backend over the ranks of `comm` on CUDA device `device` (the caller binds its local
// rank's GPU); the ncclUniqueId is created on rank 0 and sent with MPI_Bcast. UNIMPLEMENTED in a
// build without NCCL; UNAVAILABLE when NCCL or CUDA fails.
StatusOr<std::unique_ptr<Collective>> CreateNcclCollective(MPI_Comm comm, int device);
// Whether this build has the NCCL backend.
bool NcclBuilt();

// Compares CRC32C(weights[0, n)) across the ranks of `collective`. Returns DATA_LOSS naming the
// step and how many ranks differ from rank 0 when the replicas diverged (every rank gets the
// same verdict), OK otherwise.
Status CheckReplicasEqual(Collective* collective, const float* weights, int64_t n, int64_t step);

}  // namespace ips

#endif  // IPS_WORKER_COLLECTIVE_H_
