# `ips export` and `ips serve` (launch/serve_command.cc over worker/serving.h).
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/serve_command.cc)
