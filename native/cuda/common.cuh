// common.cuh - shared pieces of the CUDA sources: the Context, error
// conversion, launch helpers and element loads/stores.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "sparq/cuda.h"

namespace sparq {
namespace cuda {

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  bool blocking = true;  // ops wait for their kernels
  bool pools = false;    // cudaMallocAsync / cudaFreeAsync available
  int sms = 0;
};

inline Error cuda_error(cudaError_t e, const char* what) {
  cudaGetLastError();  // clear the sticky non-fatal error so later calls are not blamed
  return Error::make(e == cudaErrorMemoryAllocation ? Status::out_of_memory : Status::internal,
                     std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}

inline Error bad_arg(const std::string& m) { return Error::make(Status::invalid_argument, "cuda: " + m); }

// Makes the context's device current on this thread.
inline Error enter(Context* ctx) {
  if (!ctx) return bad_arg("no context");
  const cudaError_t e = cudaSetDevice(ctx->device);
  return e == cudaSuccess ? Error{} : cuda_error(e, "cudaSetDevice");
}

// After the launches of an op: launch errors, then wait for the stream.
inline Error finish(Context* ctx, const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_error(e, what);
  if (!ctx->blocking) return {};
  e = cudaStreamSynchronize(ctx->stream);
  return e == cudaSuccess ? Error{} : cuda_error(e, what);
}

#define SPARQ_CUDA_ENTER(ctx)              \
  do {                                     \
    Error _e = ::sparq::cuda::enter(ctx);  \
    if (!_e.ok()) return _e;               \
  } while (0)

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// --- element loads / stores (f32 compute) ---------------------------------------
__device__ __forceinline__ float load_elem(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::i8: return float(static_cast<const int8_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_elem(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::f16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case DType::i8: static_cast<int8_t*>(p)[i] = int8_t(max(-127, min(127, __float2int_rn(v)))); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum / max over a block of blockDim.x threads (a multiple of 32, <= 1024);
// every thread gets the result. `red` holds 32 floats of shared memory.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* red) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (lane == 0) red[w] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : (kMax ? -INFINITY : 0.f);
  return kMax ? warp_max(v) : warp_sum(v);
}
__device__ __forceinline__ float block_sum(float v, float* red) { return block_reduce<false>(v, red); }
__device__ __forceinline__ float block_max(float v, float* red) { return block_reduce<true>(v, red); }

}  // namespace cuda
}  // namespace sparq
