# Distributed training on a dataset directory under mpirun (label mpi):
# tests/ps/cluster_data_test.cc runs `mpirun --oversubscribe ... ips train` on a tiny dataset it
# makes with `ips data synth` + `ips data convert`. One ctest entry per test so each stays well
# under 90 s on a loaded 2-core box.
if(NOT IPS_KERNELS_ONLY AND TARGET ips_dist AND TARGET ips)
  ips_add_test(NAME cluster_data_test SOURCES cluster_data_test.cc LIBS ips_worker ips_proto
               LABELS mpi TIMEOUT 120 ARGS --gtest_filter=ClusterData.OneWorker*)
  if(TARGET cluster_data_test)
    target_compile_definitions(cluster_data_test PRIVATE IPS_MPIEXEC="${MPIEXEC_EXECUTABLE}"
                               IPS_BINARY="$<TARGET_FILE:ips>")
    add_dependencies(cluster_data_test ips)
    ips_add_test_groups(TARGET cluster_data_test LABELS mpi TIMEOUT 120 GROUPS
      "cluster_data_given_test:ClusterData.GivenDataset*"
      "cluster_data_one_rank_test:ClusterData.OneRank*"
      "cluster_data_two_workers_test:ClusterData.TwoWorkers*"
      "cluster_data_bad_dir_test:ClusterData.BadTrainDir*"
      "cluster_data_resume_test:ClusterData.CheckpointMidEpoch*"
      "cluster_data_resume_two_workers_test:ClusterData.ResumeTwoWorkers*")
  endif()
endif()
