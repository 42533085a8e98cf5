# Model step (Forward + Backward) of DIN and DIEN at the peer's throughput shape.
add_executable(model_step_bench ${CMAKE_CURRENT_LIST_DIR}/model_step_bench.cc)
target_link_libraries(model_step_bench PRIVATE ips_models ips_build_flags)
# Full-ranking retrieval scoring (MIND: max over interests) against the bare GEMM of the same size.
add_executable(retrieval_bench ${CMAKE_CURRENT_LIST_DIR}/retrieval_bench.cc)
target_link_libraries(retrieval_bench PRIVATE ips_worker ips_build_flags)
