#include "worker/cluster.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "proto/config.pb.h"
#include "proto/config_loader.h"

namespace ips {

std::vector<int> ClusterLayout::PsRanks() const {
  std::vector<int> r;
  for (int i = 0; i < num_ps; ++i) r.push_back(i);
  return r;
}

std::vector<int> ClusterLayout::WorkerRanks() const {
  std::vector<int> r;
  for (int i = num_ps; i < world_size; ++i) r.push_back(i);
  return r;
}

std::string ClusterLayout::RoleName(int rank) const {
  return (RoleOf(rank) == Role::kPs ? "ps " : "worker ") + std::to_string(IndexOf(rank));
}

std::string ClusterLayout::Describe() const {
  std::string s;
  for (int r = 0; r < world_size; ++r) {
    if (r > 0) s += ", ";
    s += "rank " + std::to_string(r) + " = " + RoleName(r);
  }
  return s;
}

namespace {

// Ranks of this job on this host: OMPI_COMM_WORLD_LOCAL_SIZE (mpirun sets it), else `whole_job`
// (all of them on one host).
int RanksOnThisHost(int whole_job) {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return local != nullptr ? std::max(1, std::atoi(local)) : whole_job;
}

int HostCores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace

int PsThreads(int configured, const ClusterLayout& layout) {
  if (configured > 0) return configured;
  const int ps_on_host = std::max(1, std::min(layout.num_ps, RanksOnThisHost(layout.world_size)));
  return std::max(1, HostCores() / ps_on_host);
}

int TransportSpinUs(int configured) {
  if (configured >= 0) return configured;
  // Before Cluster::Init there is no layout: the job's size from mpirun's environment.
  const char* world = std::getenv("OMPI_COMM_WORLD_SIZE");
  const int on_host = RanksOnThisHost(world != nullptr ? std::max(1, std::atoi(world)) : 1);
  return HostCores() >= kCoresPerSpinningRank * on_host ? kAutoSpinUs : 0;
}

StatusOr<ClusterLayout> MakeClusterLayout(int world_size, int num_ps) {
  return MakeClusterLayout(world_size, num_ps, ConfigSource());
}

StatusOr<ClusterLayout> MakeClusterLayout(int world_size, int num_ps, const ConfigSource& source) {
  if (world_size < 1)
    return InvalidArgumentError("cluster: world size " + std::to_string(world_size) + " < 1");
  // 0 is a valid value in the config: a single-process run ignores the cluster section.
  if (num_ps < 1)
    return BlameConfigField(source, "cluster.num_ps",
                            "must be >= 1 under mpirun (the parameter-server ranks; a "
                            "single-process run ignores it), got " +
                                std::to_string(num_ps));
  if (num_ps >= world_size)
    return BlameConfigField(
        source, "cluster.num_ps",
        std::to_string(num_ps) + " leaves no worker among the " + std::to_string(world_size) +
            " ranks of this job; run mpirun -np " + std::to_string(num_ps + 1) +
            " or more, or lower cluster.num_ps below " + std::to_string(world_size));
  ClusterLayout l;
  l.world_size = world_size;
  l.num_ps = num_ps;
  l.num_workers = world_size - num_ps;
  return l;
}

StatusOr<ClusterLayout> ClusterLayoutFromConfig(const config::ClusterConfig& cluster,
                                                int world_size) {
  return MakeClusterLayout(world_size, cluster.num_ps());
}

StatusOr<std::unique_ptr<Cluster>> Cluster::Init(int* argc, char*** argv,
                                                 const ClusterOptions& options) {
  std::unique_ptr<Cluster> c(new Cluster());
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = 0;
  if (!initialized) {
    IPS_RETURN_IF_ERROR(ps::MpiStatus(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided),
                                      "MPI_Init_thread"));
    c->owns_mpi_ = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    if (c->owns_mpi_) MPI_Finalize();
    return FailedPreconditionError(
        "cluster: the MPI library does not provide "
        "MPI_THREAD_MULTIPLE (provided level " +
        std::to_string(provided) + ")");
  }
  int world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  StatusOr<ClusterLayout> layout =
      options.config_source != nullptr
          ? MakeClusterLayout(world, options.num_ps, *options.config_source)
          : MakeClusterLayout(world, options.num_ps);
  if (!layout.ok()) {
    // Every rank computed the same verdict: nothing started. Each reports it, then they wait for
    // one another before MPI is finalised and the caller exits: mpirun kills the other ranks as
    // soon as one exits with an error, and rank 0's report (the job's RESULT line) was lost
    // whenever another rank got there first.
    if (options.report_bad_layout) options.report_bad_layout(layout.status());
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) == MPI_SUCCESS)
      (void)ps::WaitWithoutSpinning(&req, "MPI_Ibarrier");
    if (c->owns_mpi_) {
      c->owns_mpi_ = false;
      MPI_Finalize();
    }
    return layout.status();
  }
  c->layout_ = *layout;
  ps::Transport::Options topt = options.transport;
  topt.role_of_rank.clear();
  for (int r = 0; r < world; ++r) topt.role_of_rank.push_back(c->layout_.RoleName(r));
  IPS_ASSIGN_OR_RETURN(c->transport_, ps::Transport::Create(MPI_COMM_WORLD, topt));
  // The split is blocking; the barrier before it (non-spinning) makes its wait short.
  MPI_Request req;
  IPS_RETURN_IF_ERROR(ps::MpiStatus(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier"));
  IPS_RETURN_IF_ERROR(ps::WaitWithoutSpinning(&req, "MPI_Ibarrier"));
  const bool worker = c->role() == Role::kWorker;
  IPS_RETURN_IF_ERROR(ps::MpiStatus(
      MPI_Comm_split(MPI_COMM_WORLD, worker ? 1 : MPI_UNDEFINED, c->rank_, &c->workers_comm_),
      "MPI_Comm_split"));
  if (worker) {
    if (options.nccl) {
      IPS_ASSIGN_OR_RETURN(c->collective_, CreateNcclCollective(c->workers_comm_, options.device));
    } else {
      IPS_ASSIGN_OR_RETURN(c->collective_, CreateMpiCollective(c->workers_comm_));
    }
  }
  return c;
}

Cluster::~Cluster() {
  collective_.reset();
  if (transport_ != nullptr) transport_->Shutdown();
  transport_.reset();
  if (workers_comm_ != MPI_COMM_NULL) MPI_Comm_free(&workers_comm_);
  if (owns_mpi_) MPI_Finalize();
}

std::string Cluster::Describe() const {
  return "rank " + std::to_string(rank_) + " (" + layout_.RoleName(rank_) + ")";
}

void Cluster::Abort(const Status& status) const {
  ps::AbortJob("ips: " + Describe() + ": " + status.ToString() + "; ending the job");
}

}  // namespace ips
