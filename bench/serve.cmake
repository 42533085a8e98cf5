# Serving latency (bench/serve_bench.cc): DIN scoring of 100 candidates for a 50-event history on
# one pinned core through the DIN serving fast path (models/din_serving.h), verified against the
# model's forward; p50/p99 (target p99 <= 1 ms), throughput, and the generic path as baseline.
add_executable(serve_bench ${CMAKE_CURRENT_SOURCE_DIR}/serve_bench.cc)
target_link_libraries(serve_bench PRIVATE ips_worker ips_build_flags)
