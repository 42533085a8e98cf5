# Checkpoints of distributed training under mpirun (label mpi): tests/ps/cluster_checkpoint_test.cc
# launches `mpirun --oversubscribe` on itself. One ctest entry per test so each stays well under
# 90 s on a loaded 2-core box.
if(NOT IPS_KERNELS_ONLY AND TARGET ips_dist)
  ips_add_cluster_train_test(NAME cluster_checkpoint_test SOURCES cluster_checkpoint_test.cc
    ARGS --gtest_filter=ClusterCheckpoint.OneWorker*
    GROUPS
      "cluster_checkpoint_kill_worker_test:ClusterCheckpoint.KilledWorker*"
      "cluster_checkpoint_kill_ps_test:ClusterCheckpoint.KilledPs*"
      "cluster_checkpoint_kill_ps_mid_test:ClusterCheckpoint.PsKilledMid*"
      "cluster_checkpoint_kill_worker_mid_test:ClusterCheckpoint.WorkerKilledMid*"
      "cluster_checkpoint_sigterm_test:ClusterCheckpoint.Sigterm*"
      "cluster_checkpoint_sigusr1_test:ClusterCheckpoint.Sigusr1*"
      "cluster_checkpoint_reshard_test:ClusterCheckpoint.Reshard*")
endif()
