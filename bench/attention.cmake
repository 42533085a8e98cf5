# Attention benchmarks: CPU vs torch (bench/attention.sh runs both) and, in CUDA builds, the GPU
# benchmark against the device-to-device copy floor.
add_executable(attention_bench attention_bench.cc)
target_link_libraries(attention_bench PRIVATE ips_kernels ips_build_flags)
if(IPS_WITH_CUDA)
  add_executable(attention_gpu_bench attention_gpu_bench.cu)
  target_link_libraries(attention_gpu_bench PRIVATE ips_kernels CUDA::cudart)
endif()
