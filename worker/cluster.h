// Cluster: the roles of the ranks of `mpirun -np N ips ...` and the process-wide MPI set-up.
// It owns the layout (ranks [0, num_ps) are parameter servers, the rest workers; a layout that
// cannot work is rejected before anything else starts), MPI initialisation (MPI_THREAD_MULTIPLE,
// see ps/transport.h for why), the transport over all ranks with role names for its failure
// messages, the workers' communicator and their Collective, and ending the job: Abort prints a
// message naming the rank and its role, then MPI_Abort, so a failing rank never leaves the others
// hanging. A rank that dies is detected by the transport (ps/transport.h) within
// dead_after_ms (default 10 s; on one host within 100 ms), which aborts the job.
#ifndef IPS_WORKER_CLUSTER_H_
#define IPS_WORKER_CLUSTER_H_

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "ps/transport.h"
#include "worker/collective.h"

namespace ips {

namespace config {
class ClusterConfig;  // proto/config.proto; only cluster.cc includes the generated header
}
struct ConfigSource;  // proto/config_loader.h

enum class Role { kPs, kWorker };

struct ClusterLayout {
  int world_size = 0;
  int num_ps = 0;
  int num_workers = 0;

  Role RoleOf(int rank) const { return rank < num_ps ? Role::kPs : Role::kWorker; }
  // Index among the ranks of the same role.
  int IndexOf(int rank) const { return rank < num_ps ? rank : rank - num_ps; }
  std::vector<int> PsRanks() const;
  std::vector<int> WorkerRanks() const;
  // "ps 0", "worker 1".
  std::string RoleName(int rank) const;
  // "rank 0 = ps 0, rank 1 = worker 0, ...".
  std::string Describe() const;
};

// INVALID_ARGUMENT with a message saying what to change when num_ps < 1 or num_ps >= world_size
// (no rank left for a worker), about the config field it comes from: "cluster.num_ps: must be >= 1
// under mpirun ..., got 0", "cluster.num_ps: 2 leaves no worker among the 2 ranks of this job;
// ...". With `source`, blamed as a config check's error (proto/config_loader.h BlameConfigField)
// on the --set or the file line that set cluster.num_ps: "--set cluster.num_ps=0:
// cluster.num_ps: ...". Pure: no MPI.
StatusOr<ClusterLayout> MakeClusterLayout(int world_size, int num_ps);
StatusOr<ClusterLayout> MakeClusterLayout(int world_size, int num_ps, const ConfigSource& source);
// The same from the config's `cluster { num_ps: P }`.
StatusOr<ClusterLayout> ClusterLayoutFromConfig(const config::ClusterConfig& cluster,
                                                int world_size);

// Threads of a parameter-server rank: `configured` (cluster.ps_threads) when > 0, else this
// host's cores divided by the PS ranks that may be on it. mpirun maps ranks to a host's slots in
// order and the PS ranks come first, so up to min(num_ps, ranks on this host) of them can share
// it (OMPI_COMM_WORLD_LOCAL_SIZE; the whole world when unset). The pool's threads sleep between
// requests: they take the cores the workers leave idle while waiting for a pull, and cost
// nothing while the workers compute.
int PsThreads(int configured, const ClusterLayout& layout);

// How long a rank's waiting threads poll before they sleep (ps::Transport::Options::spin_us):
// `configured` (cluster.transport_spin_us) when >= 0, else kAutoSpinUs where this host has at
// least kCoresPerSpinningRank cores per rank on it (OMPI_COMM_WORLD_LOCAL_SIZE, else the whole
// OMPI_COMM_WORLD_SIZE, else 1), and 0 (never spin) where fewer: there a spinning thread would
// take the core another rank needs, as on the 2-core dev VM. Callable before Cluster::Init.
constexpr int kAutoSpinUs = 100;
constexpr int kCoresPerSpinningRank = 4;
int TransportSpinUs(int configured);

struct ClusterOptions {
  int num_ps = 1;
  // Where num_ps came from (cluster.num_ps of a loaded config; outlives Init), for a layout error
  // naming its --set or file line (MakeClusterLayout). Null: the field alone.
  const ConfigSource* config_source = nullptr;
  // Called on every rank with the error of a layout that cannot work, before the ranks wait for
  // one another and MPI is finalised: where to print it (mpirun kills the others as soon as one
  // rank exits with an error, so what a rank prints after Init returned may be lost). May be
  // empty.
  std::function<void(const Status&)> report_bad_layout;
  ps::Transport::Options transport;  // role_of_rank is filled in by Init
  // Collective backend of the workers: false = MPI; true = NCCL on device `device`.
  bool nccl = false;
  int device = 0;
};

class Cluster {
 public:
  // Initialises MPI (unless already initialised; then it must provide MPI_THREAD_MULTIPLE),
  // checks the layout (INVALID_ARGUMENT on every rank for a bad one, blamed on
  // options.config_source and passed to options.report_bad_layout, after which the ranks meet at
  // a barrier, MPI is finalised and nothing else may run; the caller exits non-zero), then builds
  // the transport and, on workers, the workers' Collective. Collective over MPI_COMM_WORLD.
  static StatusOr<std::unique_ptr<Cluster>> Init(int* argc, char*** argv,
                                                 const ClusterOptions& options);
  // Shuts the transport down (collective), frees the communicators and finalises MPI if Init
  // initialised it.
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  int rank() const { return rank_; }
  const ClusterLayout& layout() const { return layout_; }
  Role role() const { return layout_.RoleOf(rank_); }
  int role_index() const { return layout_.IndexOf(rank_); }
  // "rank 2 (worker 1)".
  std::string Describe() const;
  ps::Transport* transport() { return transport_.get(); }
  // The workers' collective; null on PS ranks.
  Collective* collective() { return collective_.get(); }

  // Ends the whole job with "ips: rank R (role): <status>; ending the job" (ps::AbortJob: stderr,
  // the error RESULT line, MPI_Abort).
  [[noreturn]] void Abort(const Status& status) const;

 private:
  Cluster() = default;
  int rank_ = 0;
  bool owns_mpi_ = false;
  ClusterLayout layout_;
  MPI_Comm workers_comm_ = MPI_COMM_NULL;
  std::unique_ptr<ps::Transport> transport_;
  std::unique_ptr<Collective> collective_;
};

}  // namespace ips

#endif  // IPS_WORKER_CLUSTER_H_
