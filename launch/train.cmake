# `ips train` (helper T): single-process training through worker/trainer.h.
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/train_command.cc)
