# Transformer models: the shared pre-LN block, SASRec (SeqModel) and BST (CtrModel).
target_sources(ips_models PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/transformer.cc
  ${CMAKE_CURRENT_LIST_DIR}/sasrec.cc
  ${CMAKE_CURRENT_LIST_DIR}/bst.cc)
