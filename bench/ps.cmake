# Embedding store benchmarks (ps/): DynamicTable pull/push throughput and memory per row.
if(TARGET ips_ps)
  add_executable(embedding_table_bench ${CMAKE_CURRENT_LIST_DIR}/embedding_table_bench.cc)
  target_link_libraries(embedding_table_bench PRIVATE ips_ps ips_build_flags)
endif()
