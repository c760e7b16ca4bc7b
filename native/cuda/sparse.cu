// sparse.cu - sparse weight x dense activations on the GPU: CSR (any
// sparsity; the bitmask format is uploaded as CSR) and N:M structured. One
// warp per output feature j streams that row's nonzeros once and applies
// them to up to 8 activation rows; int8 values are dequantized with the row's
// scale in the epilogue (f32 activations, no activation quantization).
#include <cstdint>

#include "common.cuh"

namespace sparq {
namespace cuda {

constexpr int kRows = 8;  // activation rows per warp pass

// acc[i] += v * x[i0 + i, c] for the rows of this pass
__device__ __forceinline__ void apply(float (&acc)[kRows], float v, const float* __restrict__ x, int64_t i0, int rows,
                                      int64_t k, int64_t c) {
#pragma unroll
  for (int i = 0; i < kRows; ++i)
    if (i < rows) acc[i] = fmaf(v, __ldg(x + (i0 + i) * k + c), acc[i]);
}

// y[i0 + i, j] = (sum over the warp of acc[i]) * s + b (int8 values: s is the row scale)
__device__ __forceinline__ void store(const float (&acc)[kRows], int lane, int64_t i0, int rows, int64_t n, int64_t j,
                                      float s, float b, float* __restrict__ y) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const float v = warp_sum(acc[i]);
    if (lane == 0 && i < rows) y[(i0 + i) * n + j] = v * s + b;
  }
}

__global__ void __launch_bounds__(256) spmm_csr_kernel(const DeviceCsr w, const float* __restrict__ x, int64_t m,
                                                       const float* __restrict__ bias, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t j = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (j >= w.n) return;
  const int64_t i0 = int64_t(blockIdx.y) * kRows;
  const int rows = int(min64(kRows, m - i0));
  float acc[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) acc[i] = 0.f;
  for (int64_t p = w.row_ptr[j] + lane; p < w.row_ptr[j + 1]; p += 32) {
    const int64_t c = w.col[p];
    apply(acc, w.vf ? w.vf[p] : float(w.vq[p]), x, i0, rows, w.k, c);
  }
  store(acc, lane, i0, rows, w.n, j, w.vf ? 1.f : w.scale[j], bias ? bias[j] : 0.f, y);
}

__global__ void __launch_bounds__(256) spmm_nm_kernel(const DeviceNm w, const float* __restrict__ x, int64_t m,
                                                      const float* __restrict__ bias, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t j = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (j >= w.n) return;
  const int64_t i0 = int64_t(blockIdx.y) * kRows;
  const int rows = int(min64(kRows, m - i0));
  const int64_t per_row = w.groups * w.N;
  const uint8_t* idx = w.idx + j * w.row_bytes;
  const unsigned imask = (1u << w.bits) - 1u;
  float acc[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) acc[i] = 0.f;
  for (int64_t q = lane; q < per_row; q += 32) {
    const int64_t bit = q * w.bits;
    const int64_t c = (q / w.N) * w.M + ((idx[bit >> 3] >> (bit & 7)) & imask);
    if (c >= w.k) continue;  // padding of the last group (value 0)
    apply(acc, w.vf ? w.vf[j * per_row + q] : float(w.vq[j * per_row + q]), x, i0, rows, w.k, c);
  }
  store(acc, lane, i0, rows, w.n, j, w.vf ? 1.f : w.scale[j], bias ? bias[j] : 0.f, y);
}

static Error grid_for(int64_t n, int64_t m, dim3* g) {
  if (n <= 0 || m <= 0) return bad_arg("spmm: empty shape");
  const int64_t gy = (m + kRows - 1) / kRows;
  if (gy > 65535 || (n + 7) / 8 > 0x7fffffff) return bad_arg("spmm: too many rows for one launch");
  *g = dim3(unsigned((n + 7) / 8), unsigned(gy));
  return {};
}

Error spmm_csr(Context* ctx, const DeviceCsr& w, const float* x, int64_t m, const float* bias, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  dim3 g;
  if (Error e = grid_for(w.n, m, &g); !e.ok()) return e;
  if (!w.vf && (!w.vq || !w.scale)) return bad_arg("spmm_csr: values missing");
  spmm_csr_kernel<<<g, 256, 0, ctx->stream>>>(w, x, m, bias, y);
  return finish(ctx, "spmm_csr");
}

Error spmm_nm(Context* ctx, const DeviceNm& w, const float* x, int64_t m, const float* bias, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  dim3 g;
  if (Error e = grid_for(w.n, m, &g); !e.ok()) return e;
  if (w.N < 1 || w.M < w.N || w.bits < 1 || w.bits > 8) return bad_arg("spmm_nm: bad N:M layout");
  if (!w.vf && (!w.vq || !w.scale)) return bad_arg("spmm_nm: values missing");
  spmm_nm_kernel<<<g, 256, 0, ctx->stream>>>(w, x, m, bias, y);
  return finish(ctx, "spmm_nm");
}

}  // namespace cuda
}  // namespace sparq
