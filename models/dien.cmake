# DIEN (models/dien.h) and its per-batch layout ops (models/dien_ops.h, CUDA twins when built).
target_sources(ips_models PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/dien.cc
                                  ${CMAKE_CURRENT_SOURCE_DIR}/dien_ops.cc)
if(IPS_WITH_CUDA)
  target_sources(ips_models PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cuda/dien_ops.cu)
endif()
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # The auxiliary MLP's sigmoid clamps before exp (kernels/cpu/fast_math.h); with the default
  # -ftrapping-math GCC leaves those loops scalar. The model never relies on FP exceptions.
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/dien.cc PROPERTIES
                              COMPILE_OPTIONS -fno-trapping-math)
endif()
