// bench.cu - device-side timing for `sparq bench --device cuda`: inputs filled
// on the GPU, a warm-up, then CUDA events around `reps` back-to-back calls on
// a private non-blocking context (no host round trip between calls).
#include <cstdint>

#include "common.cuh"

namespace sparq {
namespace cuda {

namespace {

__global__ void fill_kernel(uint8_t* p, size_t n, uint32_t seed, int kind) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    if (kind == 0) p[i] = uint8_t(int8_t((h % 255) - 127));  // int8 in [-127, 127]
    else if (kind == 1) reinterpret_cast<float*>(p)[i] = (float(h % 2001) - 1000.f) * 1e-3f;  // f32 count n
    else reinterpret_cast<__half*>(p)[i] = __float2half((float(h % 2001) - 1000.f) * 1e-3f);
  }
}

void fill(Context* ctx, void* p, size_t n, uint32_t seed, int kind) {
  fill_kernel<<<1024, 256, 0, ctx->stream>>>(static_cast<uint8_t*>(p), n, seed, kind);
}

template <class F>
Error time_reps(Context* ctx, int reps, F&& call, double* ms) {
  for (int i = 0; i < 2; ++i)
    if (Error e = call(); !e.ok()) return e;
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, ctx->stream);
  Error e;
  for (int i = 0; i < reps && e.ok(); ++i) e = call();
  cudaEventRecord(b, ctx->stream);
  cudaEventSynchronize(b);
  float t = 0.f;
  cudaEventElapsedTime(&t, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  if (!e.ok()) return e;
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return cuda_error(err, "bench");
  *ms = double(t) / reps;
  return {};
}

}  // namespace

Error bench_gemm_s8(int device, int64_t m, int64_t n, int64_t k, int64_t group, int reps, double* ms) {
  Context* ctx = nullptr;
  if (Error e = context_create(device, &ctx); !e.ok()) return e;
  context_set_blocking(ctx, false);
  Error e;
  {
    DeviceBuffers mem;
    DeviceS8 w;
    w.n = n, w.k = k, w.k_pad = (k + 63) / 64 * 64, w.group = group, w.groups = group ? (k + group - 1) / group : 1;
    void *a = nullptr, *sa = nullptr, *b = nullptr, *sb = nullptr, *c = nullptr;
    e = mem.alloc(ctx, size_t(m * w.k_pad), &a);
    if (e.ok()) e = mem.alloc(ctx, size_t(m) * 4, &sa);
    if (e.ok()) e = mem.alloc(ctx, size_t(n * w.k_pad), &b);
    if (e.ok()) e = mem.alloc(ctx, size_t(n * w.groups) * 4, &sb);
    if (e.ok()) e = mem.alloc(ctx, size_t(m * n) * 4, &c);
    if (e.ok()) {
      fill(ctx, a, size_t(m * w.k_pad), 1, 0);
      fill(ctx, b, size_t(n * w.k_pad), 2, 0);
      fill(ctx, sa, size_t(m), 3, 1);
      fill(ctx, sb, size_t(n * w.groups), 4, 1);
      w.values = static_cast<int8_t*>(b);
      w.scales = static_cast<float*>(sb);
      e = time_reps(ctx, reps, [&] { return gemm_s8(ctx, static_cast<int8_t*>(a), static_cast<float*>(sa), m, w, nullptr,
                                                    static_cast<float*>(c)); }, ms);
    }
  }
  context_destroy(ctx);
  return e;
}

// a * b * c * d elements without wrapping, at most 2^40 (else false)
bool count4(int64_t a, int64_t b, int64_t c, int64_t d, size_t* out) {
  uint64_t n = 1;
  for (int64_t x : {a, b, c, d})
    if (x < 1 || __builtin_mul_overflow(n, uint64_t(x), &n)) return false;
  *out = size_t(n);
  return n <= (uint64_t(1) << 40);
}

Error bench_attention(int device, const Attention& shape, int reps, double* ms) {
  // the shape is checked before anything is sized, allocated or filled (attention() checks
  // it again, but only after the buffers exist)
  size_t nq = 0, nk = 0;
  if (!count4(shape.b, shape.hq, shape.tq, shape.d, &nq) || !count4(shape.b, shape.hkv, shape.tk, shape.d, &nk) ||
      shape.hq % shape.hkv || shape.d > 256 || shape.b * shape.hkv > 65535 || shape.b * shape.hq * shape.tq > 0x7fffffff)
    return bad_arg("bench attention: bad or too large shape");
  Context* ctx = nullptr;
  if (Error e = context_create(device, &ctx); !e.ok()) return e;
  context_set_blocking(ctx, false);
  Error e;
  {
    DeviceBuffers mem;
    Attention a = shape;
    a.cap = a.tk;
    const size_t qs = a.q_type == DType::f32 ? 4 : 2, ks = a.kv_type == DType::f32 ? 4 : a.kv_type == DType::i8 ? 1 : 2;
    void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *scr = nullptr, *ksc = nullptr, *vsc = nullptr;
    e = mem.alloc(ctx, nq * qs, &q);
    if (e.ok()) e = mem.alloc(ctx, nk * ks, &k);
    if (e.ok()) e = mem.alloc(ctx, nk * ks, &v);
    if (e.ok()) e = mem.alloc(ctx, nq * qs, &o);
    const size_t sb = scratch_bytes_attention(ctx, a);
    if (e.ok() && sb) e = mem.alloc(ctx, sb, &scr);
    if (e.ok() && a.kv_type == DType::i8) {
      e = mem.alloc(ctx, size_t(a.b * a.hkv * a.tk) * 4, &ksc);
      if (e.ok()) e = mem.alloc(ctx, size_t(a.b * a.hkv * a.tk) * 4, &vsc);
    }
    if (e.ok()) {
      const int qk = a.q_type == DType::f32 ? 1 : 2, kk = a.kv_type == DType::f32 ? 1 : a.kv_type == DType::i8 ? 0 : 2;
      fill(ctx, q, nq, 5, qk);
      fill(ctx, k, nk, 6, kk);
      fill(ctx, v, nk, 7, kk);
      if (ksc) fill(ctx, ksc, size_t(a.b * a.hkv * a.tk), 8, 1), fill(ctx, vsc, size_t(a.b * a.hkv * a.tk), 9, 1);
      a.q = q, a.k = k, a.v = v, a.out = o;
      a.k_scale = static_cast<float*>(ksc), a.v_scale = static_cast<float*>(vsc);
      e = time_reps(ctx, reps, [&] { return attention(ctx, a, scr, sb); }, ms);
    }
  }
  context_destroy(ctx);
  return e;
}

}  // namespace cuda
}  // namespace sparq
