# Dense-layer op tests (kernels/activation.h, norm.h, softmax.h, loss.h, capsule.h, linear.h).
foreach(op activation norm softmax loss capsule linear)
  ips_add_test(NAME ${op}_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/${op}_test.cc LIBS ips_kernels
               LABELS unit)
endforeach()
if(IPS_WITH_CUDA)
  # CUDA vs CPU parity of every dense op and of Gemm (cuBLAS); skips without a visible device.
  ips_add_test(NAME dense_gpu_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/dense_gpu_test.cc
               LIBS ips_kernels CUDA::cudart LABELS gpu)
endif()
