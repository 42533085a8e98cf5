# The pooled baseline, MIND and the full-ranking retrieval evaluation.
ips_add_test(NAME pooled_test SOURCES pooled_test.cc LIBS ips_models LABELS unit)
ips_add_test(NAME mind_test SOURCES mind_test.cc LIBS ips_models LABELS unit)
ips_add_test(NAME retrieval_test SOURCES retrieval_test.cc LIBS ips_worker ips_ps LABELS unit)
if(IPS_WITH_CUDA)
  # MIND on CUDA against MIND on the CPU; skips without a device.
  ips_add_test(NAME mind_gpu_test SOURCES mind_gpu_test.cc LIBS ips_models LABELS gpu)
endif()
