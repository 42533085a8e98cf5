# Data-layer benchmarks (standalone; each verifies before timing and ends with a RESULT line).
add_executable(shard_reader_bench ${CMAKE_CURRENT_SOURCE_DIR}/shard_reader_bench.cc)
target_link_libraries(shard_reader_bench PRIVATE ips_worker ips_build_flags)
add_executable(convert_bench ${CMAKE_CURRENT_SOURCE_DIR}/convert_bench.cc)
target_link_libraries(convert_bench PRIVATE ips_worker ips_build_flags)
