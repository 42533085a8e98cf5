# Streaming training (worker/stream.h): tailing an event log, bounded per-user histories, example
# building with sampled negatives, and the prequential train/publish loop.
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/stream.cc)
