// small_ops.cu - the decoder's small ops on the GPU: RMSNorm, softmax,
// SwiGLU, add, RoPE, embedding lookup and the KV-cache
// store. Same formulas as the CPU references (native/cpu/ref/small_ops_ref.cpp).
#include <cstdint>

#include "common.cuh"

namespace sparq {
namespace cuda {

static Error check_rows(int64_t rows, int64_t d, const char* op) {
  if (rows <= 0 || d <= 0) return bad_arg(std::string(op) + ": empty shape");
  if (rows > 0x7fffffff) return bad_arg(std::string(op) + ": too many rows");
  return {};
}

__global__ void rmsnorm_kernel(const float* x, const float* __restrict__ w, int64_t d, float eps, float* y) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * d;
  float* yr = y + blockIdx.x * d;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, red);
  const float inv = rsqrtf(ss / float(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

Error rmsnorm(Context* ctx, const float* x, const float* w, int64_t rows, int64_t d, float eps, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (Error e = check_rows(rows, d, "rmsnorm"); !e.ok()) return e;
  rmsnorm_kernel<<<unsigned(rows), 256, 0, ctx->stream>>>(x, w, d, eps, y);
  return finish(ctx, "rmsnorm");
}

__global__ void softmax_kernel(const float* __restrict__ x, int64_t n, float* __restrict__ y) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, xr[i]);
  mx = block_max(mx, red);
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += expf(xr[i] - mx);
  s = block_sum(s, red);
  const float inv = 1.f / s;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = expf(xr[i] - mx) * inv;
}

Error softmax(Context* ctx, const float* x, int64_t rows, int64_t n, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (Error e = check_rows(rows, n, "softmax"); !e.ok()) return e;
  softmax_kernel<<<unsigned(rows), 256, 0, ctx->stream>>>(x, n, y);
  return finish(ctx, "softmax");
}

__global__ void swiglu_kernel(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] / (1.f + expf(-a[i])) * b[i];
}
__global__ void add_kernel(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

static unsigned grid_1d(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return unsigned(b < 65536 ? b : 65536);
}

Error swiglu(Context* ctx, const float* a, const float* b, int64_t n, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (n <= 0) return bad_arg("swiglu: empty");
  swiglu_kernel<<<grid_1d(n), 256, 0, ctx->stream>>>(a, b, n, y);
  return finish(ctx, "swiglu");
}

Error add(Context* ctx, const float* a, const float* b, int64_t n, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (n <= 0) return bad_arg("add: empty");
  add_kernel<<<grid_1d(n), 256, 0, ctx->stream>>>(a, b, n, y);
  return finish(ctx, "add");
}

__global__ void swiglu_rows_kernel(const float* __restrict__ h13, int64_t n, int64_t hidden, float* __restrict__ y) {
  const int64_t total = n * hidden;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / hidden, i = e % hidden;
    const float a = h13[t * 2 * hidden + i], b = h13[t * 2 * hidden + hidden + i];
    y[e] = a / (1.f + expf(-a)) * b;
  }
}

Error swiglu_rows(Context* ctx, const float* h13, int64_t n, int64_t hidden, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (n <= 0 || hidden <= 0) return bad_arg("swiglu_rows: empty");
  swiglu_rows_kernel<<<grid_1d(n * hidden), 256, 0, ctx->stream>>>(h13, n, hidden, y);
  return finish(ctx, "swiglu_rows");
}

__global__ void to_heads_kernel(const float* __restrict__ x, int64_t ld, int64_t n, int64_t h, int64_t hd,
                                float* __restrict__ y) {
  const int64_t total = n * h * hd;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % hd, t = (e / hd) % n, hh = e / (hd * n);
    y[e] = x[t * ld + hh * hd + c];
  }
}

__global__ void from_heads_kernel(const float* __restrict__ x, int64_t n, int64_t h, int64_t hd, float* __restrict__ y) {
  const int64_t total = n * h * hd;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % hd, hh = (e / hd) % h, t = e / (hd * h);
    y[e] = x[(hh * n + t) * hd + c];
  }
}

Error to_heads(Context* ctx, const float* x, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (n <= 0 || h <= 0 || hd <= 0 || ld < h * hd) return bad_arg("to_heads: bad shape");
  to_heads_kernel<<<grid_1d(n * h * hd), 256, 0, ctx->stream>>>(x, ld, n, h, hd, y);
  return finish(ctx, "to_heads");
}

Error from_heads(Context* ctx, const float* x, int64_t n, int64_t h, int64_t hd, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (n <= 0 || h <= 0 || hd <= 0) return bad_arg("from_heads: bad shape");
  from_heads_kernel<<<grid_1d(n * h * hd), 256, 0, ctx->stream>>>(x, n, h, hd, y);
  return finish(ctx, "from_heads");
}

// One thread per rotated pair; the angle in f64 as on the CPU.
__global__ void rope_kernel(const float* x, int64_t rows, int64_t t, int64_t d, int64_t pos0, double ltheta, bool neox,
                            const float* __restrict__ factors, float* y) {
  const int64_t half = d / 2;
  const int64_t total = rows * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / half, i = e % half;
    const double freq = exp(-2.0 * double(i) / double(d) * ltheta) / (factors ? double(factors[i]) : 1.0);
    const double ang = double(pos0 + r % t) * freq;
    const float c = float(cos(ang)), s = float(sin(ang));
    const float* xr = x + r * d;
    float* yr = y + r * d;
    const int64_t ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
    const float a = xr[ia], b = xr[ib];
    yr[ia] = a * c - b * s;
    yr[ib] = a * s + b * c;
    if ((d & 1) && i == 0) yr[d - 1] = xr[d - 1];
  }
}

Error rope(Context* ctx, const float* x, int64_t bh, int64_t t, int64_t d, int64_t pos0, float theta, bool neox,
           float* y, const float* freq_factors) {
  SPARQ_CUDA_ENTER(ctx);
  if (!(theta > 0.f)) return bad_arg("rope: theta must be positive");
  if (bh <= 0 || t <= 0 || d <= 0) return bad_arg("rope: empty shape");
  if (d < 2) return copy_d2d(ctx, y, x, size_t(bh * t * d) * 4);
  rope_kernel<<<grid_1d(bh * t * (d / 2)), 256, 0, ctx->stream>>>(x, bh * t, t, d, pos0, log(double(theta)), neox,
                                                               freq_factors, y);
  return finish(ctx, "rope");
}

__global__ void embed_kernel(const float* __restrict__ table, int64_t dim, const int32_t* __restrict__ tok,
                             float* __restrict__ y) {
  const float* src = table + int64_t(tok[blockIdx.x]) * dim;
  float* dst = y + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

Error embed(Context* ctx, const float* table, int64_t dim, const int32_t* tokens, int64_t n, float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (Error e = check_rows(n, dim, "embed"); !e.ok()) return e;
  embed_kernel<<<unsigned(n), 256, 0, ctx->stream>>>(table, dim, tokens, y);
  return finish(ctx, "embed");
}

// One block per stored row; int8 rows get max|x| / 127 scales (the CPU's rule).
__global__ void kv_store_kernel(const float* __restrict__ src, int64_t t, int64_t d, DType type, void* __restrict__ dst,
                                float* __restrict__ scale, int64_t cap, int64_t pos) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int64_t bh = r / t, row = bh * cap + pos + r % t;
  const float* x = src + r * d;
  if (type == DType::i8) {
    float mx = 0.f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) mx = fmaxf(mx, fabsf(x[i]));
    mx = block_max(mx, red);
    const float inv = mx > 0.f ? 127.f / mx : 0.f;
    int8_t* y = static_cast<int8_t*>(dst) + row * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      const float q = nearbyintf(x[i] * inv);
      y[i] = int8_t(q > 127.f ? 127.f : q < -127.f ? -127.f : q == q ? q : 0.f);
    }
    if (threadIdx.x == 0) scale[row] = mx / 127.f;
  } else {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) store_elem(dst, type, row * d + i, x[i]);
  }
}

Error kv_store(Context* ctx, const float* src, int64_t b, int64_t h, int64_t t, int64_t d, DType type, void* dst,
               float* scale, int64_t cap, int64_t pos) {
  SPARQ_CUDA_ENTER(ctx);
  if (!src || !dst || (type == DType::i8 && !scale)) return bad_arg("kv_store: source, destination and (int8) scales are required");
  if (b < 1 || h < 1 || t < 1 || d < 1 || pos < 0 || pos + t > cap)
    return bad_arg("kv_store: rows [" + std::to_string(pos) + ", " + std::to_string(pos + t) +
                   ") do not fit the capacity " + std::to_string(cap));
  if (b * h * t > 0x7fffffff) return bad_arg("kv_store: too many rows");
  kv_store_kernel<<<unsigned(b * h * t), 128, 0, ctx->stream>>>(src, t, d, type, dst, scale, cap, pos);
  return finish(ctx, "kv_store");
}

}  // namespace cuda
}  // namespace sparq
