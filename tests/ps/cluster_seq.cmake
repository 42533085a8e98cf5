# Distributed training of the sequence models (SASRec, GRU4Rec) under mpirun (label mpi):
# tests/ps/cluster_seq_test.cc launches `mpirun --oversubscribe` on itself (RunClusterTrain in
# every rank) and makes its tiny dataset with the `ips` binary. One ctest entry per group so each
# stays well under 60 s on a loaded 2-core box.
if(NOT IPS_KERNELS_ONLY AND TARGET ips_dist AND TARGET ips)
  ips_add_cluster_train_test(NAME cluster_seq_test SOURCES cluster_seq_test.cc
    ARGS --gtest_filter=ClusterSeq.SasrecOneWorker*
    GROUPS
      "cluster_seq_trainer_test:ClusterSeqTrainer.*"
      "cluster_seq_gru4rec_test:ClusterSeq.Gru4rec*"
      "cluster_seq_two_workers_test:ClusterSeq.TwoWorkers*"
      "cluster_seq_data_test:ClusterSeqData.OneWorker*"
      "cluster_seq_checkpoint_test:ClusterSeqData.Checkpoint*"
      "cluster_seq_resume_test:ClusterSeqData.Resume*"
      "cluster_seq_synthetic_checkpoint_test:ClusterSeq.Checkpoint*")
  if(TARGET cluster_seq_test)
    target_compile_definitions(cluster_seq_test PRIVATE IPS_BINARY="$<TARGET_FILE:ips>")
    add_dependencies(cluster_seq_test ips)
  endif()
endif()
