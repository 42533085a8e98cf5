# Recurrent layers (GRU, AUGRU, LSTM): kernels/recurrent.h.
target_sources(ips_kernels PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cpu/recurrent.cc)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # The gate loops clamp before exp (x < lo ? lo : x); with the default -ftrapping-math GCC will
  # not if-convert float compares and leaves the loops scalar (measured: ~2x slower step). The
  # kernel never relies on floating-point exceptions.
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/cpu/recurrent.cc PROPERTIES
                              COMPILE_OPTIONS -fno-trapping-math)
endif()
if(IPS_WITH_CUDA)
  target_sources(ips_kernels PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cuda/recurrent.cu)
endif()
