# The synthetic generator: determinism, format, planted structure, bounded memory, write errors.
ips_add_test(NAME synth_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/synth_test.cc
  LIBS ips_worker LABELS unit TIMEOUT 120)
# `ips data synth` end to end (exit codes, RESULT line, stdout output).
if(TARGET ips)
  ips_add_test(NAME synth_cli_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/synth_cli_test.cc
    LIBS ips_worker LABELS unit TIMEOUT 120)
  target_compile_definitions(synth_cli_test PRIVATE IPS_BINARY="$<TARGET_FILE:ips>")
  add_dependencies(synth_cli_test ips)
endif()
