# Sparse embedding (gather, pooling, dedup, scatter-add) and optimizer update kernels.
target_sources(ips_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/cpu/embedding.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/optimizer.cc)
# The gather/pool/update loops are memory- or arithmetic-simple loops over a runtime `dim`:
# -O3 lets GCC vectorise them (its -O2 cost model skips loops of unknown trip count).
set_source_files_properties(
  ${CMAKE_CURRENT_LIST_DIR}/cpu/embedding.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/optimizer.cc
  PROPERTIES COMPILE_OPTIONS "-O3")
if(IPS_WITH_CUDA)
  target_sources(ips_kernels PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/cuda/embedding.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/optimizer.cu)
endif()
