// attention_ref.cpp - scalar attention task: the same tiled online softmax as
// the vector kernels (blocks of kAttnBlock keys, one rescale per block) in
// plain loops, f32 storage with f64 dot products. The oracle of
// x86/attention_avx2.cpp; test/attention.test.ts checks both against a
// materialised f64 softmax.
#include <algorithm>
#include <cmath>

#include "../half.h"
#include "../kernels.h"

namespace sparq {

namespace {

inline float kv_at(KvType type, const void* base, const float* scale, int64_t j, int64_t d, int64_t i) {
  switch (type) {
    case KvType::f32: return static_cast<const float*>(base)[j * d + i];
    case KvType::f16: return half_to_float(static_cast<const uint16_t*>(base)[j * d + i]);
    case KvType::i8: return float(static_cast<const int8_t*>(base)[j * d + i]) * scale[j];
  }
  return 0.f;
}

}  // namespace

void attn_ref(const AttnTaskArgs& a) {
  const int64_t d = a.d;
  float* s = a.work;  // [kAttnBlock]
  for (int64_t r = 0; r < a.rows; ++r) {
    float* o = a.o + r * d;
    std::fill(o, o + d, 0.f);
    float m = -INFINITY;
    double l = 0;
    const float* q = a.q[r];
    for (int64_t j0 = a.j0; j0 < a.j1; j0 += kAttnBlock) {
      const int64_t nb = std::min(kAttnBlock, a.j1 - j0);
      float bm = -INFINITY;
      for (int64_t jj = 0; jj < nb; ++jj) {
        const int64_t j = j0 + jj;
        float v = -INFINITY;
        if (j < a.limit[r]) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += double(q[i]) * kv_at(a.type, a.k, a.k_scale, j, d, i);
          v = float(dot * a.scale);
          if (a.mask) v += a.mask[r][j];
        }
        s[jj] = v;
        bm = std::max(bm, v);
      }
      const float mn = std::max(m, bm);
      if (mn == -INFINITY) continue;  // nothing visible yet
      const float alpha = std::exp(m - mn);
      for (int64_t i = 0; i < d; ++i) o[i] *= alpha;
      l *= alpha;
      for (int64_t jj = 0; jj < nb; ++jj) {
        const float p = std::exp(s[jj] - mn);
        if (p == 0.f) continue;
        l += p;
        for (int64_t i = 0; i < d; ++i) o[i] += p * kv_at(a.type, a.v, a.v_scale, j0 + jj, d, i);
      }
      m = mn;
    }
    a.m[r] = m;
    a.l[r] = float(l);
  }
}

}  // namespace sparq
