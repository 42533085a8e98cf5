# The distributed worker side: roles and MPI set-up (worker/cluster.h) and the dense collectives
# (worker/collective.h; the NCCL backend only when CUDA is on and NCCL is found).
target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cluster.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/collective.cc)
target_link_libraries(ips_worker PUBLIC ips_dist ips_proto MPI::MPI_CXX)
if(IPS_WITH_CUDA)
  find_path(IPS_NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include /usr/include)
  find_library(IPS_NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu)
  if(IPS_NCCL_INCLUDE_DIR AND IPS_NCCL_LIBRARY)
    message(STATUS "interest-ps: NCCL collective backend (${IPS_NCCL_LIBRARY})")
    target_sources(ips_worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/nccl_collective.cc)
    target_include_directories(ips_worker PRIVATE ${IPS_NCCL_INCLUDE_DIR})
    target_compile_definitions(ips_worker PRIVATE IPS_WITH_NCCL)
    target_link_libraries(ips_worker PUBLIC ${IPS_NCCL_LIBRARY} CUDA::cudart)
  else()
    message(STATUS "interest-ps: NCCL not found; MPI collective only")
  endif()
endif()
