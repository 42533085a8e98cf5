# Recurrent layers: CPU GRU/AUGRU forward+backward (bench/recurrent.sh compares with torch) and,
# with CUDA, the GPU GRU forward+backward.
add_executable(recurrent_bench recurrent_bench.cc)
target_link_libraries(recurrent_bench PRIVATE ips_kernels ips_base ips_build_flags)
target_include_directories(recurrent_bench PRIVATE ${PROJECT_SOURCE_DIR})
if(IPS_WITH_CUDA)
  add_executable(recurrent_gpu_bench recurrent_gpu_bench.cu)
  target_link_libraries(recurrent_gpu_bench PRIVATE ips_kernels ips_base CUDA::cudart)
  target_include_directories(recurrent_gpu_bench PRIVATE ${PROJECT_SOURCE_DIR})
endif()

