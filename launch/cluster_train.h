// Distributed training under mpirun: `mpirun -np N ips train --config X` with cluster.num_ps = P
// runs P parameter-server ranks (ps/server.h, serving their shard of every table) and N - P
// worker ranks, each training the config's CTR model through the single-process Trainer
// (worker/trainer.h) with a RemoteEmbeddingStore (ps/remote_store.h) and the dense gradients
// averaged over the workers by the Collective (worker/collective.h) in the trainer's
// dense_grad_allreduce hook. This module owns only that orchestration: roles, the per-worker
// data shard, the replica check, metrics per role, and the final statistics of the tables.
#ifndef IPS_LAUNCH_CLUSTER_TRAIN_H_
#define IPS_LAUNCH_CLUSTER_TRAIN_H_

#include <cstdint>
#include <string>

namespace ips {

namespace config {
class Config;
}

struct ClusterTrainFlags {
  int eval_batches = 4;          // synthetic data: held-out batches evaluated on worker 0
  bool quiet = false;            // no progress line
  std::string metrics_out;       // JSON lines from worker 0 and per-role summaries ("" = none)
  int replica_check_every = 50;  // steps between dense replica checksums (0 = never)
  // Test-only failure injection: rank kill_rank raises SIGKILL at training step kill_step.
  int kill_rank = -1;
  int64_t kill_step = -1;
};

// Runs the job on this rank (every rank of the mpirun job calls it with the same config).
// Initialises MPI (MPI_Init_thread with null argc/argv: Open MPI needs no arguments) and
// finalises it (worker/cluster.h); call it at most once per process. Returns the process exit code:
// 0 on success, 1 on a bad layout (printed once, by rank 0, before anything starts) or a runtime
// error (the failing rank prints it naming itself and its role, and ends the job with MPI_Abort).
// Worker 0 prints `RESULT train_cluster ...` as its last stdout line. Synthetic data
// (data.synthetic) only for now: a dataset directory is UNIMPLEMENTED here.
int RunClusterTrain(const config::Config& config, const ClusterTrainFlags& flags);

// Whether this process was started by mpirun with more than one rank (OMPI_COMM_WORLD_SIZE,
// PMI_SIZE or MPI_LOCALNRANKS > 1): `ips train` dispatches to RunClusterTrain then.
bool LaunchedUnderMpi();

}  // namespace ips

#endif  // IPS_LAUNCH_CLUSTER_TRAIN_H_
