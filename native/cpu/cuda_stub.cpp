// cuda_stub.cpp - cuda_info() for builds without CUDA.
#include "sparq/sparq.h"

namespace sparq {

CudaInfo cuda_info() {
  CudaInfo info;
  info.error = "built without CUDA (nvcc was not found or SPARQ_CUDA=OFF)";
  return info;
}

}  // namespace sparq
