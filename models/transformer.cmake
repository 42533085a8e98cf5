# Transformer models: the shared pre-LN block, SASRec (SeqModel) and BST (CtrModel), and their
# per-batch layout ops (models/transformer_ops.h, CUDA twins when built).
target_sources(ips_models PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/transformer.cc
  ${CMAKE_CURRENT_LIST_DIR}/transformer_ops.cc
  ${CMAKE_CURRENT_LIST_DIR}/sasrec.cc
  ${CMAKE_CURRENT_LIST_DIR}/bst.cc)
if(IPS_WITH_CUDA)
  target_sources(ips_models PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cuda/transformer_ops.cu)
endif()
