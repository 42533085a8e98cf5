# The single-process trainer (worker/trainer.h): the step over models/ and the embedding store,
# the config -> options mapping and the synthetic throughput protocol.
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/trainer.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/dense_optimizer.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/model_factory.cc)
target_link_libraries(ips_worker PUBLIC ips_models ips_ps ips_proto)
