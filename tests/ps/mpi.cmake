# Tests of the distributed layer (label mpi). One gtest binary, ps_mpi_test, launches
# `mpirun --oversubscribe` on itself (see tests/ps/mpi_cluster_test.cc); it is registered as
# several ctest entries by gtest filter so that each stays well under 60 s on a 2-core box.
if(NOT IPS_KERNELS_ONLY AND TARGET ips_dist)
  ips_add_cluster_train_test(NAME ps_mpi_test SOURCES mpi_cluster_test.cc
    ARGS --gtest_filter=ClusterLayout.*:PsOfKey.*:TransportSpinUs.*:MpiTransport.*
    GROUPS
      "mpi_store_local_test:MpiRemoteStore.EqualsLocal*"
      "mpi_store_async_test:MpiRemoteStore.Async*"
      "mpi_store_large_pull_test:MpiRemoteStore.LargePull*"
      "mpi_store_admission_test:MpiRemoteStore.Admission*:MpiRemoteStore.MemoryCap*"
      "mpi_cluster_failure_test:MpiCluster.*"
      "mpi_train_test:MpiTrain.*"
      "mpi_train_prefetch_test:MpiTrainPrefetch.*")
endif()
