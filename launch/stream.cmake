# `ips train --stream SOURCE` (launch/stream_train.h): streaming training; train_command.cc
# dispatches to RunStreamTrain.
target_sources(ips PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/stream_train.cc)
