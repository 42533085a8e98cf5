# The next-item sequence trainer (worker/seq_trainer.h): SASRec/GRU4Rec steps, scoring, runs.
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/seq_trainer.cc)
