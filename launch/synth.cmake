# `ips data synth` (helper S): the synthetic behaviour generator's command.
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/synth_command.cc)
