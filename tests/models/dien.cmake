ips_add_test(NAME dien_test SOURCES dien_test.cc LIBS ips_models LABELS unit)
if(IPS_WITH_CUDA)
  # DIEN on CUDA against DIEN on the CPU; skips without a device.
  ips_add_test(NAME dien_gpu_test SOURCES dien_gpu_test.cc LIBS ips_models LABELS gpu)
endif()
