# Tests of the distributed layer (label mpi). One gtest binary, ps_mpi_test, launches
# `mpirun --oversubscribe` on itself (see tests/ps/mpi_cluster_test.cc); it is registered as
# several ctest entries by gtest filter so that each stays well under 60 s on a 2-core box.
if(NOT IPS_KERNELS_ONLY AND TARGET ips_dist)
  ips_add_test(NAME ps_mpi_test SOURCES mpi_cluster_test.cc LIBS ips_worker ips_dist
               LABELS mpi TIMEOUT 120 ARGS --gtest_filter=ClusterLayout.*:PsOfKey.*:MpiTransport.*)
  if(TARGET ps_mpi_test)
    target_compile_definitions(ps_mpi_test PRIVATE IPS_MPIEXEC="${MPIEXEC_EXECUTABLE}")
    # The distributed `ips train` driver, tested in-binary (launch/ has no library of its own).
    target_sources(ps_mpi_test PRIVATE ${PROJECT_SOURCE_DIR}/launch/cluster_train.cc)
    set(_ips_mpi_groups
      "mpi_store_local_test:MpiRemoteStore.EqualsLocal*"
      "mpi_store_async_test:MpiRemoteStore.Async*"
      "mpi_store_admission_test:MpiRemoteStore.Admission*:MpiRemoteStore.MemoryCap*"
      "mpi_cluster_failure_test:MpiCluster.*"
      "mpi_train_test:MpiTrain.*"
      "mpi_train_prefetch_test:MpiTrainPrefetch.*")
    foreach(group ${_ips_mpi_groups})
      string(FIND "${group}" ":" colon)
      string(SUBSTRING "${group}" 0 ${colon} name)
      math(EXPR start "${colon} + 1")
      string(SUBSTRING "${group}" ${start} -1 filter)
      add_test(NAME ${name} COMMAND ps_mpi_test --gtest_filter=${filter})
      set_tests_properties(${name} PROPERTIES LABELS mpi TIMEOUT 120)
    endforeach()
  endif()
endif()
