# Dense ops: CPU benchmark of DIN's top MLP (fused bias/activation + GEMM vs GEMM alone vs naive).
add_executable(dense_bench ${CMAKE_CURRENT_LIST_DIR}/dense_bench.cc)
target_link_libraries(dense_bench PRIVATE ips_kernels ips_build_flags)
if(IPS_WITH_CUDA)
  # The same MLP step on the GPU against the same cuBLAS GEMMs alone (run by launch/gpu_check.sh).
  add_executable(dense_gpu_bench ${CMAKE_CURRENT_LIST_DIR}/dense_gpu_bench.cc)
  target_link_libraries(dense_gpu_bench PRIVATE ips_kernels CUDA::cudart ips_build_flags)
endif()
