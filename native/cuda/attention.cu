// attention.cu - fused attention on the GPU: one streaming online-softmax
// kernel for prefill and decode, with the key range split across blocks (and
// merged by a second kernel) when there are too few query rows to fill the
// GPU (decode: split-KV).
//
// A block serves one (batch, kv head) and 4 "items" - (query row, query head)
// pairs of that kv head's group, query-major so that the items of a block have
// neighbouring causal limits and share every key tile (GQA reuse). Keys and
// values of a tile of 32 are converted to f32 into shared memory (f16, bf16,
// int8 x row scale); each warp owns one item: lane l scores key l of the tile,
// the warp updates its running max / sum, then accumulates P.V with the lane
// owning output dimensions lane, lane + 32, ... (d <= 256).
#include <cstdint>
#include <climits>

#include "common.cuh"

namespace sparq {
namespace cuda {

namespace att {
constexpr int WARPS = 4, TK = 32, MAXD = 256, PER_LANE = MAXD / 32;
}

struct AttParams {
  Attention a;
  int64_t g = 1;       // query heads per kv head
  int64_t items = 0;   // per kv head: tq * g
  int splits = 1;
  int64_t chunk = 0;   // keys per split
  float* partial = nullptr;  // splits > 1: [splits, b * hq * tq, d + 2]
};

__global__ void __launch_bounds__(att::WARPS * 32) attention_kernel(const AttParams p) {
  using namespace att;
  extern __shared__ float smem[];
  const Attention& a = p.a;
  const int d = int(a.d), ldk = d + 1;
  float* ks = smem;               // [TK][d + 1]
  float* vs = ks + TK * ldk;      // [TK][d]
  float* qs = vs + TK * d;        // [WARPS][d]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t bkv = blockIdx.y;  // b * hkv + kv head
  const int64_t bi = bkv / a.hkv, hk = bkv % a.hkv;
  const int64_t item = int64_t(blockIdx.x) * WARPS + warp;
  const bool active = item < p.items;
  const int64_t qi = active ? item / p.g : 0;          // query row
  const int64_t h = hk * p.g + (active ? item % p.g : 0);  // query head
  const int64_t off = a.tk - a.tq;                       // causal: key j visible when j <= qi + off

  // This block's key range: its split, cut at the largest causal limit of its items.
  int64_t kb = int64_t(blockIdx.z) * p.chunk, ke = min64(a.tk, kb + p.chunk);
  if (a.causal) {
    const int64_t last_item = min64(p.items, int64_t(blockIdx.x + 1) * WARPS) - 1;
    ke = min64(ke, last_item / p.g + off + 1);
  }
  const int64_t my_end = a.causal ? min64(ke, qi + off + 1) : ke;

  // q row (scaled) into shared memory
  const int64_t qrow = ((bi * a.hq + h) * a.tq + qi) * a.d;
  if (active)
    for (int c = lane; c < d; c += 32) qs[warp * d + c] = load_elem(a.q, a.q_type, qrow + c) * a.scale;

  float m = -INFINITY, l = 0.f, acc[PER_LANE];
#pragma unroll
  for (int c = 0; c < PER_LANE; ++c) acc[c] = 0.f;
  const int64_t kvbase = bkv * a.cap;
  const float* mrow = a.mask ? a.mask + bi * a.mask_sb + h * a.mask_sh + qi * a.tk : nullptr;

  for (int64_t t0 = kb; t0 < ke; t0 += TK) {
    __syncthreads();  // previous tile consumed (and q stored, first time)
    for (int e = tid; e < TK * d; e += WARPS * 32) {
      const int j = e / d, c = e % d;
      const int64_t key = t0 + j;
      float kv = 0.f, vv = 0.f;
      if (key < ke) {
        const int64_t at = (kvbase + key) * a.d + c;
        kv = load_elem(a.k, a.kv_type, at);
        vv = load_elem(a.v, a.kv_type, at);
        if (a.kv_type == DType::i8) kv *= a.k_scale[kvbase + key], vv *= a.v_scale[kvbase + key];
      }
      ks[j * ldk + c] = kv;
      vs[j * d + c] = vv;
    }
    __syncthreads();
    if (!active || t0 >= my_end) continue;
    const int64_t key = t0 + lane;
    float s = -INFINITY;
    if (key < my_end) {
      const float* kr = ks + lane * ldk;
      const float* qr = qs + warp * d;
      float dot = 0.f;
      for (int c = 0; c < d; ++c) dot = fmaf(qr[c], kr[c], dot);
      s = dot + (mrow ? mrow[key] : 0.f);
    }
    const float mt = warp_max(s);
    const float mn = fmaxf(m, mt);
    if (mn == -INFINITY) continue;  // every key so far hidden
    const float pl = s == -INFINITY ? 0.f : __expf(s - mn);
    const float corr = m == -INFINITY ? 0.f : __expf(m - mn);
    l = l * corr + warp_sum(pl);
    m = mn;
#pragma unroll
    for (int c = 0; c < PER_LANE; ++c) acc[c] *= corr;
    const int nk = int(min64(TK, my_end - t0));
    for (int j = 0; j < nk; ++j) {
      const float pj = __shfl_sync(0xffffffffu, pl, j);
      const float* vr = vs + j * d;
#pragma unroll
      for (int c = 0; c < PER_LANE; ++c) {
        const int col = lane + 32 * c;
        if (col < d) acc[c] = fmaf(pj, vr[col], acc[c]);
      }
    }
  }
  if (!active) return;
  const int64_t orow = ((bi * a.hq + h) * a.tq + qi);
  if (p.splits == 1) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int c = 0; c < PER_LANE; ++c) {
      const int col = lane + 32 * c;
      if (col < d) store_elem(a.out, a.q_type, orow * a.d + col, acc[c] * inv);
    }
  } else {
    const int64_t rows = a.b * a.hq * a.tq;
    float* pr = p.partial + (int64_t(blockIdx.z) * rows + orow) * (a.d + 2);
    if (lane == 0) pr[0] = m, pr[1] = l;
#pragma unroll
    for (int c = 0; c < PER_LANE; ++c) {
      const int col = lane + 32 * c;
      if (col < d) pr[2 + col] = acc[c];
    }
  }
}

// Merges the splits of one output row: weights exp(m_s - M), then / sum l_s exp(m_s - M).
__global__ void attention_merge_kernel(const float* __restrict__ partial, int splits, int64_t rows, int64_t d,
                                       void* out, DType type) {
  const int64_t r = blockIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, partial[(s * rows + r) * (d + 2)]);
  float L = 0.f;
  if (M != -INFINITY)
    for (int s = 0; s < splits; ++s) {
      const float* pr = partial + (s * rows + r) * (d + 2);
      if (pr[0] != -INFINITY) L += pr[1] * __expf(pr[0] - M);
    }
  const float inv = L > 0.f ? 1.f / L : 0.f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float v = 0.f;
    if (L > 0.f)
      for (int s = 0; s < splits; ++s) {
        const float* pr = partial + (s * rows + r) * (d + 2);
        if (pr[0] != -INFINITY) v += pr[2 + c] * __expf(pr[0] - M);
      }
    store_elem(out, type, r * d + c, v * inv);
  }
}

// splits: enough blocks for two waves of the GPU when few query rows would
// leave it idle, at least 256 keys per split, and no more than `scratch`
// holds (its partial rows are (d + 2) floats per split and output row).
static AttParams plan(const Attention& a, int sms, size_t scratch) {
  AttParams p;
  p.a = a;
  p.g = a.hq / a.hkv;
  p.items = a.tq * p.g;
  const int64_t blocks = (p.items + att::WARPS - 1) / att::WARPS * a.b * a.hkv;
  int64_t splits = 1;
  const int64_t target = int64_t(sms > 0 ? sms : 80) * 2;
  if (blocks < target && a.tk > 256) splits = min64((target + blocks - 1) / blocks, (a.tk + 255) / 256);
  splits = max64(1, min64(splits, 64));
  const int64_t per_split = a.b * a.hq * a.tq * (a.d + 2) * 4;
  // in size_t: scratch may be SIZE_MAX ("as much as it takes", scratch_bytes_attention)
  if (splits > 1 && scratch / size_t(per_split) < size_t(splits)) splits = int64_t(scratch / size_t(per_split));
  if (splits < 2) splits = 1;
  p.splits = int(splits);
  p.chunk = (a.tk + splits - 1) / splits;
  if (p.chunk < 1) p.chunk = 1;
  return p;
}

size_t scratch_bytes_attention(Context* ctx, const Attention& a) {
  if (!ctx || a.hkv <= 0 || a.hq % a.hkv || a.b < 1 || a.tq < 1 || a.d < 1) return 0;
  const AttParams p = plan(a, ctx->sms, SIZE_MAX);
  return p.splits > 1 ? size_t(p.splits) * size_t(a.b * a.hq * a.tq) * size_t(a.d + 2) * 4 : 0;
}

Error attention(Context* ctx, const Attention& a, void* scratch, size_t scratch_bytes) {
  SPARQ_CUDA_ENTER(ctx);
  if (a.b < 1 || a.hq < 1 || a.tq < 1 || a.d < 1 || a.hkv < 1 || a.tk < 0)
    return bad_arg("attention: empty shape");
  if (a.d > att::MAXD) return bad_arg("attention: head dimension " + std::to_string(a.d) + " is over 256");
  if (a.hq % a.hkv) return bad_arg("attention: query heads must be a multiple of kv heads");
  if (a.tk > a.cap) return bad_arg("attention: more keys than the store holds");
  if (a.kv_type == DType::i8 && (!a.k_scale || !a.v_scale)) return bad_arg("attention: int8 keys need scales");
  if (a.q_type == DType::i8) return bad_arg("attention: queries must be f32, f16 or bf16");
  AttParams p = plan(a, ctx->sms, scratch ? scratch_bytes : 0);
  if (p.splits > 1) p.partial = static_cast<float*>(scratch);
  const int64_t gx = (p.items + att::WARPS - 1) / att::WARPS;
  if (gx > 0x7fffffff || a.b * a.hkv > 65535 || a.b * a.hq * a.tq > 0x7fffffff)
    return bad_arg("attention: too many rows or heads for one launch");
  if (a.tk == 0) {  // nothing to attend to: zeros
    const size_t eb = a.q_type == DType::f32 ? 4 : 2;
    const cudaError_t e = cudaMemsetAsync(a.out, 0, size_t(a.b * a.hq * a.tq * a.d) * eb, ctx->stream);
    if (e != cudaSuccess) return cuda_error(e, "attention");
    return finish(ctx, "attention");
  }
  const size_t smem = size_t(att::TK * (2 * a.d + 1) + att::WARPS * a.d) * 4;
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return cuda_error(e, "attention: shared memory");
  }
  const dim3 grid(unsigned(gx), unsigned(a.b * a.hkv), unsigned(p.splits));
  attention_kernel<<<grid, att::WARPS * 32, smem, ctx->stream>>>(p);
  if (p.splits > 1) {
    const int64_t rows = a.b * a.hq * a.tq;
    attention_merge_kernel<<<unsigned(rows), 64, 0, ctx->stream>>>(p.partial, p.splits, rows, a.d, a.out, a.q_type);
  }
  return finish(ctx, "attention");
}

}  // namespace cuda
}  // namespace sparq
