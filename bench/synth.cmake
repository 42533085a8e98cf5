# Throughput of the synthetic generator (`ips data synth`), single thread.
add_executable(synth_bench ${CMAKE_CURRENT_SOURCE_DIR}/synth_bench.cc)
target_link_libraries(synth_bench PRIVATE ips_worker ips_build_flags)
