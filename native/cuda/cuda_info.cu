// cuda_info.cu - CUDA runtime probe linked with cudart_static: reports the
// compiled architectures, the runtime/driver versions and the device count.
// On a machine without a driver or GPU every call fails softly and the CPU
// paths keep working.
#include <cuda_runtime.h>

#include "sparq/sparq.h"

#ifndef SPARQ_CUDA_ARCHS
#define SPARQ_CUDA_ARCHS ""
#endif

namespace sparq {

// A trivial kernel so the fatbinary holds code for every compiled arch.
__global__ void probe_kernel(int* out) { if (out) *out = 1; }

CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  info.archs = SPARQ_CUDA_ARCHS;
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    info.devices = 0;
    info.error = cudaGetErrorString(e);
    cudaGetLastError();
  } else {
    info.devices = n;
  }
  return info;
}

}  // namespace sparq
