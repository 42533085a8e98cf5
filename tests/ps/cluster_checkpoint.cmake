# Checkpoints of distributed training under mpirun (label mpi): tests/ps/cluster_checkpoint_test.cc
# launches `mpirun --oversubscribe` on itself. One ctest entry per test so each stays well under
# 90 s on a loaded 2-core box.
if(NOT IPS_KERNELS_ONLY AND TARGET ips_dist)
  ips_add_test(NAME cluster_checkpoint_test SOURCES cluster_checkpoint_test.cc
               LIBS ips_worker ips_dist LABELS mpi TIMEOUT 120
               ARGS --gtest_filter=ClusterCheckpoint.OneWorker*)
  if(TARGET cluster_checkpoint_test)
    target_compile_definitions(cluster_checkpoint_test PRIVATE IPS_MPIEXEC="${MPIEXEC_EXECUTABLE}")
    # The distributed `ips train` driver, tested in-binary (launch/ has no library of its own).
    target_sources(cluster_checkpoint_test PRIVATE ${PROJECT_SOURCE_DIR}/launch/cluster_train.cc)
    set(_ips_ckpt_groups
      "cluster_checkpoint_kill_worker_test:ClusterCheckpoint.KilledWorker*"
      "cluster_checkpoint_kill_ps_test:ClusterCheckpoint.KilledPs*"
      "cluster_checkpoint_kill_ps_mid_test:ClusterCheckpoint.PsKilledMid*"
      "cluster_checkpoint_kill_worker_mid_test:ClusterCheckpoint.WorkerKilledMid*"
      "cluster_checkpoint_sigterm_test:ClusterCheckpoint.Sigterm*"
      "cluster_checkpoint_reshard_test:ClusterCheckpoint.Reshard*")
    foreach(group ${_ips_ckpt_groups})
      string(FIND "${group}" ":" colon)
      string(SUBSTRING "${group}" 0 ${colon} name)
      math(EXPR start "${colon} + 1")
      string(SUBSTRING "${group}" ${start} -1 filter)
      add_test(NAME ${name} COMMAND cluster_checkpoint_test --gtest_filter=${filter})
      set_tests_properties(${name} PROPERTIES LABELS mpi TIMEOUT 120)
    endforeach()
  endif()
endif()
