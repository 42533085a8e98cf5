# Attention kernels: CPU tests (gradient checks, fused vs reference) and CUDA parity tests.
ips_add_test(NAME attention_test SOURCES attention_test.cc LIBS ips_kernels LABELS unit)
# SmallGemm (kernels/cpu/small_gemm.h), the attention unit's per-ISA GEMM, and the float Linear
# backward that also runs on it.
ips_add_test(NAME small_gemm_test SOURCES small_gemm_test.cc LIBS ips_kernels LABELS unit)
if(IPS_WITH_CUDA)
  ips_add_test(NAME attention_gpu_test SOURCES attention_gpu_test.cc LIBS ips_kernels CUDA::cudart
               LABELS gpu)
endif()
