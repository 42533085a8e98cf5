# Evaluation metrics and the peer's synthetic batch generator (helper M). Only ips_base and the
# standard library are needed by these files.
target_sources(ips_worker PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/metrics.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/synthetic_batches.cc)
