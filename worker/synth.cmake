# The synthetic behaviour generator (`ips data synth`), owned by helper S.
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/synth.cc)
