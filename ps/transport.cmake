# ips_dist: the distributed layer of ps/ over MPI (transport, parameter-server loop, remote store
# client). A separate library, not part of ips_ps, so that ips_ps stays free of MPI and Protobuf
# and keeps building with IPS_KERNELS_ONLY=ON (the GPU machine has neither).
if(NOT IPS_KERNELS_ONLY)
  add_library(ips_dist
    ${CMAKE_CURRENT_SOURCE_DIR}/transport.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/server.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/remote_store.cc)
  target_include_directories(ips_dist PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(ips_dist PUBLIC ips_ps ips_proto MPI::MPI_CXX Threads::Threads
                        PRIVATE ips_build_flags)
endif()
