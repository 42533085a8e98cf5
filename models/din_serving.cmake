# DIN's serving forward (models/din_serving.h): one history against many candidates, CPU only
# (AVX-512 tiles picked at run time, portable fallback), used by worker/serving.cc's Scorer.
target_sources(ips_models PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/din_serving.cc)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 reports its own AVX-512 intrinsics (those passing _mm512_undefined_ps() as the unused
  # merge source: max, min, roundscale, scalef, rcp14) as "may be used uninitialized" once they are
  # inlined (as "is used uninitialized" where a kernel is instantiated for one row or output): a
  # false positive in the compiler's header, not in this file.
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/din_serving.cc PROPERTIES
                              COMPILE_OPTIONS "-Wno-maybe-uninitialized;-Wno-uninitialized")
endif()
