# Full-ranking retrieval evaluation (worker/retrieval.h): models with user vectors over every item.
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/retrieval.cc)
target_link_libraries(ips_worker PUBLIC ips_models)
