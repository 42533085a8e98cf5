# GRU4Rec-style next-item model (models/gru4rec.h) over kernels/recurrent.h.
target_sources(ips_models PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/gru4rec.cc)
