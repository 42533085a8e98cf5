# `ips data convert|inspect` (launch/data_command.cc); `ips data synth` is in synth.cmake.
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/data_command.cc)
