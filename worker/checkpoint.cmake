# Training checkpoints (worker/checkpoint.h: manifest, atomic publish, validation) and the
# serving bundle + scorer (worker/serving.h).
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/serving.cc)
target_link_libraries(ips_worker PUBLIC ips_models ips_ps ips_proto)
