# Embedding benchmarks: CPU (always) and, with CUDA, the GPU gather/scatter bandwidth bench.
add_executable(embedding_bench ${CMAKE_CURRENT_LIST_DIR}/embedding_bench.cc)
target_link_libraries(embedding_bench PRIVATE ips_kernels ips_build_flags)
if(IPS_WITH_CUDA)
  add_executable(embedding_gpu_bench ${CMAKE_CURRENT_LIST_DIR}/embedding_gpu_bench.cu)
  target_link_libraries(embedding_gpu_bench PRIVATE ips_kernels ips_build_flags)
  target_compile_options(embedding_gpu_bench PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
endif()
