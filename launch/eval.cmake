# `ips eval`: evaluation of a checkpoint (launch/eval_command.cc).
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/eval_command.cc)
