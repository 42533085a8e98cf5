# Attention ops (kernels/attention.h): DIN activation unit and multi-head attention.
target_sources(ips_kernels PRIVATE cpu/attention.cc)
if(IPS_WITH_CUDA)
  target_sources(ips_kernels PRIVATE cuda/attention.cu)
endif()
# FastExp's clamps vectorise only without trapping-math semantics (see kernels/cpu/attention.cc).
set_source_files_properties(cpu/attention.cc PROPERTIES
  COMPILE_OPTIONS "$<$<OR:$<CXX_COMPILER_ID:GNU>,$<CXX_COMPILER_ID:Clang>>:-fno-trapping-math>")
