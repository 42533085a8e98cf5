# Transformer models (SASRec, BST and their shared block): gradient checks, semantics, peer
# parity (skipped without /usr/bin/python3 + torch).
ips_add_test(NAME transformer_test SOURCES transformer_test.cc LIBS ips_models LABELS unit)
if(IPS_WITH_CUDA)
  # SASRec and BST on CUDA against the CPU kernel path; skips without a device.
  ips_add_test(NAME transformer_gpu_test SOURCES transformer_gpu_test.cc LIBS ips_worker
               LABELS gpu)
endif()
# The SASRec/BST step timing driver (bench/transformer_bench.cc). It lives here because
# bench/CMakeLists.txt is not ours to edit.
if(IPS_BUILD_BENCHMARKS AND NOT IPS_KERNELS_ONLY)
  add_executable(transformer_bench ${PROJECT_SOURCE_DIR}/bench/transformer_bench.cc)
  target_link_libraries(transformer_bench PRIVATE ips_models ips_build_flags)
  target_include_directories(transformer_bench PRIVATE ${PROJECT_SOURCE_DIR})
endif()
