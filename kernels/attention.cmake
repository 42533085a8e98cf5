# Attention ops (kernels/attention.h): DIN activation unit and multi-head attention.
target_sources(ips_kernels PRIVATE cpu/attention.cc)
if(IPS_WITH_CUDA)
  target_sources(ips_kernels PRIVATE cuda/attention.cu)
endif()
# FastExp's clamps vectorise only without trapping-math semantics (see kernels/cpu/attention.cc).
set_source_files_properties(cpu/attention.cc PROPERTIES
  COMPILE_OPTIONS "$<$<OR:$<CXX_COMPILER_ID:GNU>,$<CXX_COMPILER_ID:Clang>>:-fno-trapping-math>")
# SmallGemm (kernels/cpu/small_gemm.h), the attention unit's GEMMs: one file per ISA, each built
# with its own flags and chosen at run time, so the binary still runs on baseline x86-64.
target_sources(ips_kernels PRIVATE cpu/small_gemm.cc cpu/small_gemm_avx512.cc
                                   cpu/small_gemm_avx2.cc)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i.86)$")
  set_source_files_properties(cpu/small_gemm_avx512.cc PROPERTIES COMPILE_OPTIONS
    "$<$<OR:$<CXX_COMPILER_ID:GNU>,$<CXX_COMPILER_ID:Clang>>:-mavx512f;-mfma>")
  set_source_files_properties(cpu/small_gemm_avx2.cc PROPERTIES COMPILE_OPTIONS
    "$<$<OR:$<CXX_COMPILER_ID:GNU>,$<CXX_COMPILER_ID:Clang>>:-mavx2;-mfma>")
endif()
