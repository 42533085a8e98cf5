# Distributed `ips train` under mpirun (launch/cluster_train.h): PS ranks serve, workers train
# through a RemoteEmbeddingStore with dense gradients all-reduced (CTR models in cluster_train.cc,
# sequence models in cluster_seq_train.cc, what both share in cluster_worker.cc).
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cluster_train.cc
                           ${CMAKE_CURRENT_SOURCE_DIR}/cluster_worker.cc
                           ${CMAKE_CURRENT_SOURCE_DIR}/cluster_seq_train.cc)
target_link_libraries(ips PRIVATE ips_dist)
