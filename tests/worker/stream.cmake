# Streaming training (worker/stream.h): unit tests, and the interest-drift experiment (DIN over
# 200K + 100K synthetic events: 15 s on the idle 2-core VM, 33 s while other builds ran: `slow`).
ips_add_test(NAME stream_test SOURCES stream_test.cc LIBS ips_worker LABELS unit TIMEOUT 120)
ips_add_test(NAME stream_drift_test SOURCES stream_drift_test.cc LIBS ips_worker
  LABELS "integration;slow" TIMEOUT 300)
# RunStreamTrain (launch/stream_train.cc) compiled into the test: the config -> stream job wiring,
# the RESULT line and the exit codes, without going through `ips train`'s flag parsing.
ips_add_test(NAME stream_train_cli_test
  SOURCES stream_train_cli_test.cc ${PROJECT_SOURCE_DIR}/launch/stream_train.cc
  LIBS ips_worker LABELS integration TIMEOUT 120)
