# Training checkpoints (worker/checkpoint.h) and the serving bundle, scorer and CLI
# (worker/serving.h, `ips export`, `ips serve`).
ips_add_test(NAME checkpoint_test SOURCES checkpoint_test.cc LIBS ips_worker LABELS unit)
ips_add_test(NAME serving_test SOURCES serving_test.cc LIBS ips_worker LABELS unit)
ips_add_test(NAME serve_cli_test SOURCES serve_cli_test.cc LIBS ips_worker LABELS integration)
if(TARGET serve_cli_test)
  target_compile_definitions(serve_cli_test PRIVATE IPS_BINARY="$<TARGET_FILE:ips>")
  add_dependencies(serve_cli_test ips)
endif()
# Checkpointed `ips train` runs: bitwise resume (DIN/DIEN/SASRec datasets, DIN synthetic),
# `ips eval`, SIGTERM and corrupt checkpoints at the CLI.
ips_add_test(NAME resume_test SOURCES resume_test.cc LIBS ips_worker LABELS integration TIMEOUT 600)
if(TARGET resume_test)
  target_compile_definitions(resume_test PRIVATE IPS_BINARY="$<TARGET_FILE:ips>")
  add_dependencies(resume_test ips)
endif()
