# Embedding and optimizer kernel tests: CPU (unit) always; CUDA parity (gpu) when built with CUDA.
ips_add_test(NAME embedding_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/embedding_test.cc
             LIBS ips_kernels LABELS unit)
ips_add_test(NAME optimizer_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/optimizer_test.cc
             LIBS ips_kernels LABELS unit)
if(IPS_WITH_CUDA)
  ips_add_test(NAME embedding_gpu_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/embedding_gpu_test.cc
               LIBS ips_kernels LABELS gpu)
  ips_add_test(NAME optimizer_gpu_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/optimizer_gpu_test.cc
               LIBS ips_kernels LABELS gpu)
endif()
