# Benchmarks of the distributed layer, run under mpirun (see bench/README.md):
#   mpirun --allow-run-as-root --oversubscribe -np 3 build/bench/mpi_ps_bench
if(TARGET ips_dist)
  add_executable(mpi_ps_bench ${CMAKE_CURRENT_SOURCE_DIR}/mpi_ps_bench.cc)
  target_link_libraries(mpi_ps_bench PRIVATE ips_worker ips_models ips_dist ips_build_flags)
endif()
