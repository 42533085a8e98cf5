# Checkpoint files of the embedding store: durable checksummed file I/O and the table file format
# (ps/checkpoint_io.h, ps/table_checkpoint.h). Still free of protobuf: the manifest is the
# worker's (worker/checkpoint.h).
target_sources(ips_ps PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_io.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/table_checkpoint.cc)
