# Dense-layer ops (activation.h, norm.h, softmax.h, loss.h, capsule.h, linear.h): CPU paths always,
# CUDA twins when IPS_WITH_CUDA. Included by kernels/CMakeLists.txt.
target_sources(ips_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/cpu/activation.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/norm.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/softmax.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/loss.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/capsule.cc
  ${CMAKE_CURRENT_LIST_DIR}/cpu/linear.cc)
if(IPS_WITH_CUDA)
  target_sources(ips_kernels PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/cuda/activation.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/norm.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/softmax.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/loss.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/capsule.cu)
endif()
