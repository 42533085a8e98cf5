# The pooled baseline (models/pooled.h) and MIND (models/mind.h, its per-batch ops
# models/mind_ops.h with their CUDA twins).
target_sources(ips_models PRIVATE ${CMAKE_CURRENT_LIST_DIR}/pooled.cc
  ${CMAKE_CURRENT_LIST_DIR}/mind.cc ${CMAKE_CURRENT_LIST_DIR}/mind_ops.cc)
if(IPS_WITH_CUDA)
  target_sources(ips_models PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cuda/mind_ops.cu)
endif()
