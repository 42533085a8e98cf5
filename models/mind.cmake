# The pooled baseline (models/pooled.h) and MIND (models/mind.h).
target_sources(ips_models PRIVATE ${CMAKE_CURRENT_LIST_DIR}/pooled.cc
  ${CMAKE_CURRENT_LIST_DIR}/mind.cc)
