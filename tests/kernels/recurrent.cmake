# Recurrent layers: float64 gradient checks and CPU fast-vs-reference parity (unit); CUDA vs CPU
# parity (gpu, skipped without a visible device).
ips_add_test(NAME recurrent_test SOURCES recurrent_test.cc LIBS ips_kernels ips_base LABELS unit)
if(IPS_WITH_CUDA)
  ips_add_test(NAME recurrent_gpu_test SOURCES recurrent_gpu_test.cc LIBS ips_kernels ips_base
               LABELS gpu)
endif()
