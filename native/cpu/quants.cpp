// quants.cpp - the GGUF block formats: the table, the reference dequantizers
// (to_f32: ggml's dequantize_row_* arithmetic, operation for operation), the
// decoders to the shared int8 + scale / offset form, the quantizers used to
// write files, and the driver of the block linear.
//
// Layouts (ggml-common.h; f16 = IEEE half, little-endian):
//   Q4_0  18 B / 32: d f16, qs[16]            w = d * (nib - 8); value j in byte j % 16, low nibble for j < 16
//   Q4_1  20 B / 32: d, m f16, qs[16]         w = d * nib + m
//   Q5_0  22 B / 32: d, qh u32, qs[16]        w = d * ((nib | bit j of qh << 4) - 16)
//   Q5_1  24 B / 32: d, m, qh u32, qs[16]     w = d * (nib | bit << 4) + m
//   Q8_0  34 B / 32: d, qs[32] int8           w = d * q
//   Q2_K  84 B / 256: scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit), d, dmin
//   Q3_K 110 B / 256: hmask[32], qs[64] (2-bit), scales[12] (16 x 6-bit, -32), d
//   Q4_K 144 B / 256: d, dmin, scales[12] (8 x 6-bit scale + 8 x 6-bit min), qs[128]
//   Q5_K 176 B / 256: d, dmin, scales[12], qh[32], qs[128]
//   Q6_K 210 B / 256: ql[128], qh[64], scales[16] int8, d
//   IQ4_NL 18 B / 32: d, qs[16]               w = d * kvalues[nib]
//   IQ4_XS 136 B / 256: d, scales_h u16, scales_l[4], qs[128]   w = d * (6-bit ls - 32) * kvalues[nib]
#include "quants.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#include "dispatch.h"
#include "half.h"
#include "thread_pool.h"

namespace sparq {

namespace {

constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}
inline void put_f16(uint8_t* p, float v) {
  const uint16_t h = float_to_half(v);
  std::memcpy(p, &h, 2);
}
inline uint32_t u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// The decoded value of each type, value by value (shared by to_f32 and decode):
// visit(i, q, group scale, group offset) for every value i of one block, in order.
// to_f32 writes scale * q + offset as ggml does: offsets are added after the product.

// 6-bit scale j and min j of the K types' 12-byte scales (Q4_K, Q5_K).
inline void scale_min_k4(int j, const uint8_t* s, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}
// 6-bit scale j of Q3_K, less 32.
inline int scale_q3k(int j, const uint8_t* s) {
  const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | hi << 4) - 32;
}

template <class Visit>
void q4_0_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b);
  for (int j = 0; j < 16; ++j) v(j, (b[2 + j] & 0xF) - 8, d, 0.f);
  for (int j = 0; j < 16; ++j) v(16 + j, (b[2 + j] >> 4) - 8, d, 0.f);
}
template <class Visit>
void q4_1_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b), m = f16(b + 2);
  for (int j = 0; j < 16; ++j) v(j, b[4 + j] & 0xF, d, m);
  for (int j = 0; j < 16; ++j) v(16 + j, b[4 + j] >> 4, d, m);
}
template <class Visit>
void q5_0_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b);
  const uint32_t qh = u32(b + 2);
  for (int j = 0; j < 16; ++j) v(j, int((b[6 + j] & 0xF) | ((qh >> j) & 1) << 4) - 16, d, 0.f);
  for (int j = 0; j < 16; ++j) v(16 + j, int((b[6 + j] >> 4) | ((qh >> (16 + j)) & 1) << 4) - 16, d, 0.f);
}
template <class Visit>
void q5_1_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b), m = f16(b + 2);
  const uint32_t qh = u32(b + 4);
  for (int j = 0; j < 16; ++j) v(j, int((b[8 + j] & 0xF) | ((qh >> j) & 1) << 4), d, m);
  for (int j = 0; j < 16; ++j) v(16 + j, int((b[8 + j] >> 4) | ((qh >> (16 + j)) & 1) << 4), d, m);
}
template <class Visit>
void q8_0_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b);
  for (int j = 0; j < 32; ++j) v(j, int(int8_t(b[2 + j])), d, 0.f);
}
template <class Visit>
void q2_k_block(const uint8_t* b, Visit&& v) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = f16(b + 80), dmin = f16(b + 82);
  int g = 0;
  for (int n = 0; n < 256; n += 128, qs += 32)
    for (int s = 0; s < 8; s += 2)
      for (int h = 0; h < 2; ++h, ++g) {
        const float dl = d * float(scales[g] & 0xF), ml = dmin * float(scales[g] >> 4);
        for (int l = 0; l < 16; ++l) v(16 * g + l, (qs[16 * h + l] >> s) & 3, dl, -ml);
      }
}
template <class Visit>
void q3_k_block(const uint8_t* b, Visit&& v) {
  const uint8_t* hm = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = f16(b + 108);
  int g = 0, bit = 0;
  for (int n = 0; n < 256; n += 128, qs += 32)
    for (int s = 0; s < 8; s += 2, ++bit)
      for (int h = 0; h < 2; ++h, ++g) {
        const float dl = d * float(scale_q3k(g, sc));
        for (int l = 0; l < 16; ++l)
          v(16 * g + l, int((qs[16 * h + l] >> s) & 3) - ((hm[16 * h + l] >> bit) & 1 ? 0 : 4), dl, 0.f);
      }
}
template <class Visit>
void q4_k_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b), dmin = f16(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qs = b + 16;
  for (int j = 0; j < 4; ++j, qs += 32) {
    int s, m;
    scale_min_k4(2 * j, sc, &s, &m);
    const float d1 = d * float(s), m1 = dmin * float(m);
    scale_min_k4(2 * j + 1, sc, &s, &m);
    const float d2 = d * float(s), m2 = dmin * float(m);
    for (int l = 0; l < 32; ++l) v(64 * j + l, qs[l] & 0xF, d1, -m1);
    for (int l = 0; l < 32; ++l) v(64 * j + 32 + l, qs[l] >> 4, d2, -m2);
  }
}
template <class Visit>
void q5_k_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b), dmin = f16(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int j = 0; j < 4; ++j, qs += 32) {
    int s, m;
    scale_min_k4(2 * j, sc, &s, &m);
    const float d1 = d * float(s), m1 = dmin * float(m);
    scale_min_k4(2 * j + 1, sc, &s, &m);
    const float d2 = d * float(s), m2 = dmin * float(m);
    for (int l = 0; l < 32; ++l) v(64 * j + l, (qs[l] & 0xF) + ((qh[l] >> (2 * j)) & 1) * 16, d1, -m1);
    for (int l = 0; l < 32; ++l) v(64 * j + 32 + l, (qs[l] >> 4) + ((qh[l] >> (2 * j + 1)) & 1) * 16, d2, -m2);
  }
}
template <class Visit>
void q6_k_block(const uint8_t* b, Visit&& v) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16(b + 208);
  for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8)
    for (int t = 0; t < 4; ++t)
      for (int l = 0; l < 32; ++l) {
        const int lo = t & 1 ? ql[l + 32] : ql[l];
        const int q = ((t < 2 ? lo & 0xF : lo >> 4) | ((qh[l] >> (2 * t)) & 3) << 4) - 32;
        v(n + 32 * t + l, q, d * float(sc[l / 16 + 2 * t]), 0.f);
      }
}
template <class Visit>
void iq4_nl_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b);
  for (int j = 0; j < 16; ++j) v(j, kIq4Values[b[2 + j] & 0xF], d, 0.f);
  for (int j = 0; j < 16; ++j) v(16 + j, kIq4Values[b[2 + j] >> 4], d, 0.f);
}
template <class Visit>
void iq4_xs_block(const uint8_t* b, Visit&& v) {
  const float d = f16(b);
  uint16_t sh;
  std::memcpy(&sh, b + 2, 2);
  const uint8_t* sl = b + 4;
  const uint8_t* qs = b + 8;
  for (int ib = 0; ib < 8; ++ib, qs += 16) {
    const int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
    const float dl = d * float(ls - 32);
    for (int j = 0; j < 16; ++j) v(32 * ib + j, kIq4Values[qs[j] & 0xF], dl, 0.f);
    for (int j = 0; j < 16; ++j) v(32 * ib + 16 + j, kIq4Values[qs[j] >> 4], dl, 0.f);
  }
}

// to_f32 and decode for a block visitor. Offsets are added only where the type
// has them (ggml computes d * q alone for the symmetric types; adding 0.f would
// turn -0 into +0).
#define SPARQ_BLOCK_FNS(NAME, N, B, OFFS)                                                                    \
  void NAME##_to_f32(const uint8_t* src, int64_t blocks, float* out) {                                     \
    for (int64_t i = 0; i < blocks; ++i)                                                                   \
      NAME##_block(src + i * (B), [&](int j, int q, float s, float o) {                                    \
        out[i * (N) + j] = OFFS ? s * float(q) + o : s * float(q);                                        \
      });                                                                                                  \
  }                                                                                                        \
  void NAME##_decode(const uint8_t* src, int64_t blocks, DecodedRow r) {                                  \
    for (int64_t i = 0; i < blocks; ++i)                                                                   \
      NAME##_block(src + i * (B), [&](int j, int q, float s, float o) {                                    \
        r.q[i * (N) + j] = int8_t(q);                                                                      \
        if (j % kGgmlGroup == 0) {                                                                         \
          r.scale[(i * (N) + j) / kGgmlGroup] = s;                                                         \
          r.offset[(i * (N) + j) / kGgmlGroup] = o;                                                        \
        }                                                                                                  \
      });                                                                                                  \
  }

SPARQ_BLOCK_FNS(q4_0, 32, 18, false)
SPARQ_BLOCK_FNS(q4_1, 32, 20, true)
SPARQ_BLOCK_FNS(q5_0, 32, 22, false)
SPARQ_BLOCK_FNS(q5_1, 32, 24, true)
SPARQ_BLOCK_FNS(q8_0, kQK8_0, kQ8_0Bytes, false)
SPARQ_BLOCK_FNS(q2_k, 256, 84, true)
SPARQ_BLOCK_FNS(q3_k, 256, 110, false)
SPARQ_BLOCK_FNS(q4_k, 256, 144, true)
SPARQ_BLOCK_FNS(q5_k, 256, 176, true)
SPARQ_BLOCK_FNS(q6_k, 256, 210, false)
SPARQ_BLOCK_FNS(iq4_nl, 32, 18, false)
SPARQ_BLOCK_FNS(iq4_xs, 256, 136, false)
#undef SPARQ_BLOCK_FNS

// --- quantizers ---------------------------------------------------------------
// Every type follows ggml's reference quantizer (quantize_row_*_ref; for IQ4
// the search ggml_quantize_chunk runs), so a file written here holds the blocks
// llama.cpp's quantizer writes from the same f32 (checked byte for byte by
// scripts/check-ggml-quantize.ts and test/ggml_llamacpp.test.ts).

// value of largest magnitude (its sign kept)
float signed_max(const float* x, int n) {
  float amax = 0.f, max = 0.f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  return max;
}
void min_max(const float* x, int n, float* lo, float* hi) {
  *lo = x[0];
  *hi = x[0];
  for (int i = 1; i < n; ++i) {
    *lo = std::min(*lo, x[i]);
    *hi = std::max(*hi, x[i]);
  }
}

void q4_0_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, out += 18) {
    const float d = signed_max(x, 32) / -8, id = d != 0.f ? 1.f / d : 0.f;
    put_f16(out, d);
    for (int j = 0; j < 16; ++j) {
      const int a = std::min(15, int(int8_t(x[j] * id + 8.5f))), b = std::min(15, int(int8_t(x[16 + j] * id + 8.5f)));
      out[2 + j] = uint8_t(a | b << 4);
    }
  }
}
void q4_1_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, out += 20) {
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    const float d = (hi - lo) / 15, id = d != 0.f ? 1.f / d : 0.f;
    put_f16(out, d);
    put_f16(out + 2, lo);
    for (int j = 0; j < 16; ++j) {
      const int a = std::min(15, int(int8_t((x[j] - lo) * id + 0.5f))), b = std::min(15, int(int8_t((x[16 + j] - lo) * id + 0.5f)));
      out[4 + j] = uint8_t(a | b << 4);
    }
  }
}
void q5_0_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, out += 22) {
    const float d = signed_max(x, 32) / -16, id = d != 0.f ? 1.f / d : 0.f;
    put_f16(out, d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int a = std::min(31, int(int8_t(x[j] * id + 16.5f))), b = std::min(31, int(int8_t(x[16 + j] * id + 16.5f)));
      out[6 + j] = uint8_t((a & 0xF) | (b & 0xF) << 4);
      qh |= uint32_t(a >> 4 & 1) << j | uint32_t(b >> 4 & 1) << (16 + j);
    }
    std::memcpy(out + 2, &qh, 4);
  }
}
void q5_1_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, out += 24) {
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    const float d = (hi - lo) / 31, id = d != 0.f ? 1.f / d : 0.f;
    put_f16(out, d);
    put_f16(out + 2, lo);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int a = int(uint8_t((x[j] - lo) * id + 0.5f)), b = int(uint8_t((x[16 + j] - lo) * id + 0.5f));
      out[8 + j] = uint8_t((a & 0xF) | (b & 0xF) << 4);
      qh |= uint32_t(a >> 4 & 1) << j | uint32_t(b >> 4 & 1) << (16 + j);
    }
    std::memcpy(out + 4, &qh, 4);
  }
}
void q8_0_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += kQK8_0, out += kQ8_0Bytes) {
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127, id = d != 0.f ? 1.f / d : 0.f;
    put_f16(out, d);
    for (int j = 0; j < 32; ++j) out[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
  }
}

// The K and IQ4 types: ggml's reference quantizers (quantize_row_q*_K_ref and
// the IQ4 ones ggml_quantize_chunk runs), the same search for each sub-block's
// scale (and min) and the same f32 operations in the same order, so that the
// blocks are byte-identical to llama.cpp's (scripts/check-ggml-quantize.ts).

// round half to even by the float magic number, as ggml (|v| < 2^22)
inline int round_even(float v) {
  const float t = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}
constexpr float kGroupEps = 1e-15f;

// Asymmetric sub-block (Q2_K, Q4_K, Q5_K): codes L in [0, nmax] and a scale and
// min (returned, min as a positive *the_min) that minimise the weighted error,
// searched over nstep + 1 trial scales around the range's.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, float rmin, float rdelta, int nstep,
                    bool use_mad) {
  uint8_t aux[32];
  float lo = x[0], hi = x[0], sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -lo;
    return 0.f;
  }
  float iscale = float(nmax) / (hi - lo), scale = 1 / iscale, best = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = uint8_t(clampi(round_even(iscale * (x[i] - lo)), 0, nmax));
    float diff = scale * L[i] + lo - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best += w[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampi(round_even(iscale * (x[i] - lo)), 0, nmax);
      aux[i] = uint8_t(l);
      sum_l += w[i] * float(l);
      sum_l2 += w[i] * float(l) * float(l);
      sum_xl += w[i] * float(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * aux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        err += w[i] * diff;
      }
      if (err < best) {
        std::memcpy(L, aux, size_t(n));
        best = err;
        scale = this_scale;
        lo = this_min;
      }
    }
  }
  *the_min = -lo;
  return scale;
}

// Symmetric sub-block of 16 (Q6_K): codes L = l + nmax, l in [-nmax, nmax - 1],
// the scale the best of 19 trials around nmax / max under weights x^2.
float fit_scale_sym(int n, int nmax, const float* x, int8_t* L) {
  const float max = signed_max(x, n);
  if (std::fabs(max) < kGroupEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  // the weighted sums of one trial scale; its codes into L when `keep`
  auto trial = [&](float iscale, bool keep, float* sumlx, float* suml2) {
    *sumlx = *suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampi(round_even(iscale * x[i]), -nmax, nmax - 1);
      if (keep) L[i] = int8_t(l + nmax);
      const float w = x[i] * x[i];
      *sumlx += w * x[i] * float(l);
      *suml2 += w * float(l) * float(l);
    }
  };
  float sumlx, suml2;
  trial(-float(nmax) / max, true, &sumlx, &suml2);
  float scale = suml2 ? sumlx / suml2 : 0.f, best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float iscale = -(float(nmax) + 0.1f * float(is)) / max;
    trial(iscale, false, &sumlx, &suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      trial(iscale, true, &sumlx, &suml2);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's sub-block of 16: l in [-nmax, nmax - 1] refined one value at a time
// (up to 5 passes) while the weighted fit improves; L = l + nmax.
float fit_scale_q3(int n, int nmax, const float* x, int8_t* L) {
  const float max = signed_max(x, n);
  if (std::fabs(max) < kGroupEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -float(nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = int8_t(clampi(round_even(iscale * x[i]), -nmax, nmax - 1));
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(L[i]);
    suml2 += w * float(L[i]) * float(L[i]);
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * float(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * float(L[i]) * float(L[i]);
        const int nl = clampi(round_even(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (nl != L[i]) {
          slx += w * x[i] * float(nl);
          sl2 += w * float(nl) * float(nl);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = int8_t(nl);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.f ? sumlx / suml2 : 0.f;
}

// four 2-bit codes per byte: byte l of each 32 holds values l, l + 32, l + 64, l + 96 of its 128
void pack2(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 256; j += 128)
    for (int l = 0; l < 32; ++l) qs[j / 4 + l] = uint8_t(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

void q2_k_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 256, out += 84) {
    uint8_t L[256];
    float w[16], mins[16], scales[16], max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) w[l] = std::fabs(x[16 * j + l]);
      scales[j] = fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    uint8_t* sc = out;
    if (max_scale > 0) {
      const float iscale = 15.f / max_scale;
      for (int j = 0; j < 16; ++j) sc[j] = uint8_t(round_even(iscale * scales[j]));
      put_f16(out + 80, max_scale / 15.f);
    } else {
      std::memset(sc, 0, 16);
      put_f16(out + 80, 0.f);
    }
    if (max_min > 0) {
      const float iscale = 15.f / max_min;
      for (int j = 0; j < 16; ++j) sc[j] = uint8_t(sc[j] | round_even(iscale * mins[j]) << 4);
      put_f16(out + 82, max_min / 15.f);
    } else {
      put_f16(out + 82, 0.f);
    }
    for (int j = 0; j < 16; ++j) {
      const float d = f16(out + 80) * float(sc[j] & 0xF);
      if (!d) continue;
      const float dm = f16(out + 82) * float(sc[j] >> 4);
      for (int l = 0; l < 16; ++l) L[16 * j + l] = uint8_t(clampi(round_even((x[16 * j + l] + dm) / d), 0, 3));
    }
    pack2(L, out + 16);
  }
}
void k4_scales(const int* ls, const int* lm, uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s[j] = uint8_t(ls[j]);
      s[j + 4] = uint8_t(lm[j]);
    } else {
      s[j + 4] = uint8_t((ls[j] & 0xF) | (lm[j] & 0xF) << 4);
      s[j - 4] |= uint8_t((ls[j] >> 4) << 6);
      s[j] |= uint8_t((lm[j] >> 4) << 6);
    }
  }
}
// Q4_K and Q5_K: the same scales and mins; Q5_K adds a fifth bit per value (qh).
template <bool Q5>
void qk45_quantize(const float* x, int64_t blocks, uint8_t* out) {
  constexpr int kLevels = Q5 ? 31 : 15, kBytes = Q5 ? 176 : 144, kSteps = Q5 ? 15 : 20;
  constexpr float kRmin = Q5 ? -0.5f : -1.f;
  for (int64_t i = 0; i < blocks; ++i, x += 256, out += kBytes) {
    uint8_t L[256];
    float w[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      const float* xb = x + 32 * j;
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += xb[l] * xb[l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(xb[l]);
      scales[j] = fit_scale_min(32, kLevels, xb, w, L + 32 * j, &mins[j], kRmin, 0.1f, kSteps, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    int ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      ls[j] = std::min(63, int(uint8_t(round_even(inv_scale * scales[j]))));
      lm[j] = std::min(63, int(uint8_t(round_even(inv_min * mins[j]))));
    }
    put_f16(out, max_scale / 63.f);
    put_f16(out + 2, max_min / 63.f);
    k4_scales(ls, lm, out + 4);
    for (int j = 0; j < 8; ++j) {
      const float d = f16(out) * float(ls[j]);
      if (!d) continue;
      const float dm = f16(out + 2) * float(lm[j]);
      for (int l = 0; l < 32; ++l) L[32 * j + l] = uint8_t(clampi(round_even((x[32 * j + l] + dm) / d), 0, kLevels));
    }
    uint8_t* qh = out + 16;
    uint8_t* qs = out + (Q5 ? 48 : 16);
    if (Q5) std::memset(qh, 0, 32);
    for (int n = 0; n < 256; n += 64)  // byte l of each 32: values n + l (low nibble) and n + 32 + l
      for (int l = 0; l < 32; ++l) {
        const int a = L[n + l], b = L[n + 32 + l];
        qs[n / 2 + l] = uint8_t((a & 0xF) | (b & 0xF) << 4);
        if (Q5) qh[l] = uint8_t(qh[l] | (a >> 4) << (n / 32) | (b >> 4) << (n / 32 + 1));
      }
  }
}
void q4_k_quantize(const float* x, int64_t blocks, uint8_t* out) { qk45_quantize<false>(x, blocks, out); }
void q5_k_quantize(const float* x, int64_t blocks, uint8_t* out) { qk45_quantize<true>(x, blocks, out); }
void q3_k_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 256, out += 110) {
    int8_t L[256];
    float scales[16];
    for (int j = 0; j < 16; ++j) scales[j] = fit_scale_q3(16, 4, x + 16 * j, L + 16 * j);
    const float max_scale = signed_max(scales, 16);
    uint8_t* s = out + 96;
    std::memset(s, 0, 12);
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int l = clampi(int(int8_t(round_even(iscale * scales[j]))), -32, 31) + 32;
        if (j < 8) s[j] = uint8_t(l & 0xF);
        else s[j - 8] |= uint8_t((l & 0xF) << 4);
        s[8 + j % 4] |= uint8_t((l >> 4) << (2 * (j / 4)));
      }
      put_f16(out + 108, 1 / iscale);
    } else {
      put_f16(out + 108, 0.f);
    }
    for (int j = 0; j < 16; ++j) {
      const float d = f16(out + 108) * float(scale_q3k(j, s));
      if (!d) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(clampi(round_even(x[16 * j + l] / d), -4, 3) + 4);
    }
    // the high bit of value v in bit v / 32 of hmask byte v % 32; the low two bits packed by 128s
    uint8_t* hm = out;
    std::memset(hm, 0, 32);
    uint8_t lo[256];
    for (int v = 0; v < 256; ++v) {
      if (L[v] > 3) hm[v % 32] |= uint8_t(1 << (v / 32));
      lo[v] = uint8_t(L[v] & 3);
    }
    pack2(lo, out + 32);
  }
}
void q6_k_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 256, out += 210) {
    int8_t L[256];
    float scales[16];
    for (int j = 0; j < 16; ++j) scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
    const float max_scale = signed_max(scales, 16);
    std::memset(out, 0, 210);
    if (std::fabs(max_scale) < kGroupEps) continue;  // all zero, d = 0
    const float iscale = -128.f / max_scale;
    put_f16(out + 208, 1 / iscale);
    int8_t* s = reinterpret_cast<int8_t*>(out + 192);
    for (int j = 0; j < 16; ++j) s[j] = int8_t(std::min(127, round_even(iscale * scales[j])));
    for (int j = 0; j < 16; ++j) {
      const float d = f16(out + 208) * float(s[j]);
      if (!d) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(clampi(round_even(x[16 * j + l] / d), -32, 31) + 32);
    }
    uint8_t* ql = out;
    uint8_t* qh = out + 128;
    for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
      for (int l = 0; l < 32; ++l) {
        const int a = L[j + l], b = L[j + l + 32], c = L[j + l + 64], e = L[j + l + 96];
        ql[l] = uint8_t((a & 0xF) | (c & 0xF) << 4);
        ql[l + 32] = uint8_t((b & 0xF) | (e & 0xF) << 4);
        qh[l] = uint8_t(a >> 4 | (b >> 4) << 2 | (c >> 4) << 4 | (e >> 4) << 6);
      }
  }
}
// the index of the IQ4 value nearest x (ties to the lower), by bisection
int iq4_index(float x) {
  if (x <= kIq4Values[0]) return 0;
  if (x >= kIq4Values[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < kIq4Values[mid]) hi = mid;
    else lo = mid;
  }
  return x - kIq4Values[hi - 1] < kIq4Values[hi] - x ? hi - 1 : hi;
}
// One IQ4 block of 32: the scale of the best fit (weights x^2) over 15 trial
// scales around max / -127 (0 when all zero). The callers then code every value
// with the scale they store.
float iq4_fit(const float* x) {
  const float max = signed_max(x, 32);
  if (std::fabs(max) < kGroupEps) return 0.f;
  float d = -max / float(kIq4Values[0]), id = 1 / d, sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const float q = float(kIq4Values[iq4_index(id * x[j])]), w = x[j] * x[j];
    sumqx += w * q * x[j];
    sumq2 += w * q * q;
  }
  d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
  float best = d * sumqx;
  for (int t = -7; t <= 7; ++t) {
    id = (float(t) + float(kIq4Values[0])) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = float(kIq4Values[iq4_index(id * x[j])]), w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}
void pack_iq4(const uint8_t* L, int n, uint8_t* q) {
  for (int b = 0; b < n / 32; ++b)
    for (int j = 0; j < 16; ++j) q[16 * b + j] = uint8_t(L[32 * b + j] | L[32 * b + 16 + j] << 4);
}
void iq4_nl_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, out += 18) {
    uint8_t L[32];
    const float d = iq4_fit(x);
    put_f16(out, d);
    const float id = d ? 1 / d : 0.f;
    for (int j = 0; j < 32; ++j) L[j] = uint8_t(iq4_index(id * x[j]));
    pack_iq4(L, 32, out + 2);
  }
}
void iq4_xs_quantize(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i, x += 256, out += 136) {
    uint8_t L[256];
    float scales[8];
    for (int b = 0; b < 8; ++b) scales[b] = iq4_fit(x + 32 * b);
    const float max_scale = signed_max(scales, 8);
    std::memset(out, 0, 136);
    const float d = -max_scale / 32, id = d ? 1 / d : 0.f;
    put_f16(out, d);
    uint16_t sh = 0;
    for (int b = 0; b < 8; ++b) {
      const int l = clampi(round_even(id * scales[b]), -32, 31);
      const float dl = d * float(l), idl = dl ? 1 / dl : 0.f;
      for (int j = 0; j < 32; ++j) L[32 * b + j] = uint8_t(iq4_index(idl * x[32 * b + j]));
      out[4 + b / 2] |= uint8_t(((l + 32) & 0xF) << (4 * (b % 2)));
      sh = uint16_t(sh | ((l + 32) >> 4) << (2 * b));
    }
    std::memcpy(out + 2, &sh, 2);
    pack_iq4(L, 256, out + 8);
  }
}

void f16_to_f32(const uint8_t* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f16(src + 2 * i);
}
void bf16_to_f32(const uint8_t* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    const uint32_t bits = uint32_t(h) << 16;
    std::memcpy(out + i, &bits, 4);
  }
}
void f32_to_f32(const uint8_t* src, int64_t n, float* out) { std::memcpy(out, src, size_t(n) * 4); }

const BlockFormat kFormats[] = {
    {GgmlType::f32, "F32", 1, 4, 0, 0, false, false, f32_to_f32, nullptr, nullptr},
    {GgmlType::f16, "F16", 1, 2, 0, 0, false, false, f16_to_f32, nullptr, nullptr},
    {GgmlType::q4_0, "Q4_0", 32, 18, 32, 32, false, true, q4_0_to_f32, q4_0_decode, q4_0_quantize, -8, 7},
    {GgmlType::q4_1, "Q4_1", 32, 20, 32, 32, true, true, q4_1_to_f32, q4_1_decode, q4_1_quantize, 0, 15},
    {GgmlType::q5_0, "Q5_0", 32, 22, 32, 32, false, true, q5_0_to_f32, q5_0_decode, q5_0_quantize, -16, 15},
    {GgmlType::q5_1, "Q5_1", 32, 24, 32, 32, true, true, q5_1_to_f32, q5_1_decode, q5_1_quantize, 0, 31},
    {GgmlType::q8_0, "Q8_0", kQK8_0, kQ8_0Bytes, 32, 32, false, true, q8_0_to_f32, q8_0_decode, q8_0_quantize},
    {GgmlType::q2_k, "Q2_K", 256, 84, 16, 32, true, true, q2_k_to_f32, q2_k_decode, q2_k_quantize, 0, 3},
    {GgmlType::q3_k, "Q3_K", 256, 110, 16, 32, false, true, q3_k_to_f32, q3_k_decode, q3_k_quantize, -4, 3},
    {GgmlType::q4_k, "Q4_K", 256, 144, 32, 32, true, true, q4_k_to_f32, q4_k_decode, q4_k_quantize, 0, 15},
    {GgmlType::q5_k, "Q5_K", 256, 176, 32, 32, true, true, q5_k_to_f32, q5_k_decode, q5_k_quantize, 0, 31},
    {GgmlType::q6_k, "Q6_K", 256, 210, 16, 32, false, true, q6_k_to_f32, q6_k_decode, q6_k_quantize, -32, 31},
    {GgmlType::iq4_nl, "IQ4_NL", 32, 18, 32, 32, false, true, iq4_nl_to_f32, iq4_nl_decode, iq4_nl_quantize},
    {GgmlType::iq4_xs, "IQ4_XS", 256, 136, 32, 32, false, true, iq4_xs_to_f32, iq4_xs_decode, iq4_xs_quantize},
    {GgmlType::bf16, "BF16", 1, 2, 0, 0, false, false, bf16_to_f32, nullptr, nullptr},
};

Error bad(const std::string& m) { return Error::make(Status::invalid_argument, m); }

}  // namespace

const BlockFormat* block_format(int type) {
  for (const BlockFormat& f : kFormats)
    if (int(f.type) == type) return &f;
  return nullptr;
}

const BlockFormat* block_formats(int* n) {
  *n = int(sizeof kFormats / sizeof kFormats[0]);
  return kFormats;
}

std::string ggml_type_name(int type) {
  const BlockFormat* f = block_format(type);
  return f ? f->name : "type " + std::to_string(type);
}

Error block_weight(int type, int64_t n, int64_t k, const void* data, BlockWeight* w) {
  const BlockFormat* f = block_format(type);
  if (!f || !f->quantized) return bad("block weight: " + ggml_type_name(type) + " is not a quantized GGUF type sparq reads");
  if (n < 1 || k < 1 || k % f->block)
    return bad(std::string("block weight: ") + f->name + " rows must be a positive multiple of " + std::to_string(f->block) +
               " values; got [" + std::to_string(n) + ", " + std::to_string(k) + "]");
  if (k > (int64_t(1) << 24)) return bad("block weight: k is absurd (" + std::to_string(k) + ")");
  if (!data) return bad("block weight: no data");
  w->fmt = f;
  w->n = n;
  w->k = k;
  w->row_bytes = k / f->block * f->bytes;
  w->data = static_cast<const uint8_t*>(data);
  return Error{};
}

// --- the x16 layout (quants.h) ---------------------------------------------------

namespace {
constexpr int64_t kQ4_KBytes = 144, kQ5_KBytes = 176, kQ6_KBytes = 210;

// Where byte `i` of row r's stored block b lies in its x16 group (g0: the group's
// first byte, nb: blocks per row). Q4_0, per unit of 8 blocks: scales
// [blocks][16] f16, then codes [blocks][4][16][4]. Q4_K, per super-block (2304
// bytes): d [16] f16, dmin [16] f16, the 12 scale bytes as planes [12][16],
// codes [4 chunks][8][16][4]. Q8_0 per block: as quants.h. (Q6_K is not a
// shuffle of bytes: q6_planes below.)
// Returns the x16 offset of a run of `len` stored bytes starting at i (runs never
// straddle a field: 2 for an f16, 1 for a scale byte, 4 for codes).
struct X16Map {
  GgmlType type;
  int64_t nb;
  // the runs of one stored block: (stored offset, length)
  template <class F>
  void each(int64_t b, int64_t r, F&& f) const {
    if (type == GgmlType::q4_0) {
      f(0, 2, x16_q4_0_scales_at(b) + r * 2);
      const int64_t codes = x16_q4_0_codes_at(nb, b);
      for (int q = 0; q < 4; ++q) f(2 + 4 * q, 4, codes + q * 64 + r * 4);
    } else if (type == GgmlType::q4_k) {
      const int64_t u = b * kX16Rows * kQ4_KBytes;
      f(0, 2, u + r * 2);
      f(2, 2, u + 32 + r * 2);
      for (int p = 0; p < 12; ++p) f(4 + p, 1, u + 64 + p * 16 + r);
      for (int t = 0; t < 32; ++t) f(16 + 4 * t, 4, u + 256 + t * 64 + r * 4);
    } else if (type == GgmlType::q8_0) {  // d [0, 2), qs [2, 34)
      const int64_t u = b * kX16Rows * 34;
      f(0, 2, u + r * 2);
      for (int t = 0; t < 8; ++t) f(2 + 4 * t, 4, u + 2 * kX16Rows + t * 64 + r * 4);
    }
  }
};

}  // namespace

// Q6_K x16 (quants.h): a stored super-block's codes (ql, qh) as the three planes
// of its two halves, in the order [n][p][l] (192 bytes: dword (3n + p) * 8 + t is
// slot t of plane p), and back. Plane p's byte l: q(p) | bits 2p, 2p + 1 of q(3) << 6.
void q6_planes(const uint8_t* blk, uint8_t* out, bool portable) {
  for (int n = 0; n < 2; ++n) {
    const uint8_t *ql = blk + 64 * n, *qh = blk + 128 + 32 * n;
    uint8_t* o = out + 96 * n;
#if defined(__SSE2__) || defined(_M_X64)
    if (!portable) {
      // 16 values of each quarter at a time (16-bit shifts of masked bytes move
      // nothing across bytes)
      const __m128i m4 = _mm_set1_epi8(15), m30 = _mm_set1_epi8(0x30), top = _mm_set1_epi8(char(0xc0));
      for (int l = 0; l < 32; l += 16) {
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + l));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + 32 + l));
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + l));
        const __m128i q0 = _mm_or_si128(_mm_and_si128(a, m4), _mm_and_si128(_mm_slli_epi16(h, 4), m30));
        const __m128i q1 = _mm_or_si128(_mm_and_si128(b, m4), _mm_and_si128(_mm_slli_epi16(h, 2), m30));
        const __m128i q2 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), _mm_and_si128(h, m30));
        // q(3)'s bit pairs to the top of each plane: its ql nibble (b >> 4) and qh
        // bits 6-7 as q3 = b >> 4 | (h >> 6) << 4
        const __m128i q3 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(b, 4), m4), _mm_and_si128(_mm_srli_epi16(h, 2), m30));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + l), _mm_or_si128(q0, _mm_and_si128(_mm_slli_epi16(q3, 6), top)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 32 + l), _mm_or_si128(q1, _mm_and_si128(_mm_slli_epi16(q3, 4), top)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 64 + l), _mm_or_si128(q2, _mm_and_si128(_mm_slli_epi16(q3, 2), top)));
      }
    } else
#endif
    {
      for (int l = 0; l < 32; ++l) {
        const unsigned a = ql[l], b = ql[l + 32], h = qh[l];
        const unsigned q0 = (a & 15) | (h & 3) << 4, q1 = (b & 15) | (h >> 2 & 3) << 4, q2 = (a >> 4) | (h >> 4 & 3) << 4,
                       q3 = (b >> 4) | (h >> 6) << 4;
        o[l] = uint8_t(q0 | (q3 & 3) << 6);
        o[32 + l] = uint8_t(q1 | (q3 >> 2 & 3) << 6);
        o[64 + l] = uint8_t(q2 | (q3 >> 4) << 6);
      }
    }
  }
}

void q6_unplanes(const uint8_t* in, uint8_t* blk, bool portable) {
  for (int n = 0; n < 2; ++n) {
    uint8_t *ql = blk + 64 * n, *qh = blk + 128 + 32 * n;
    const uint8_t* i = in + 96 * n;
#if defined(__SSE2__) || defined(_M_X64)
    if (!portable) {
      const __m128i m4 = _mm_set1_epi8(15), m30 = _mm_set1_epi8(0x30), m63 = _mm_set1_epi8(63), top = _mm_set1_epi8(char(0xc0));
      for (int l = 0; l < 32; l += 16) {
        const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(i + l));
        const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(i + 32 + l));
        const __m128i b2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(i + 64 + l));
        const __m128i q0 = _mm_and_si128(b0, m63), q1 = _mm_and_si128(b1, m63), q2 = _mm_and_si128(b2, m63);
        __m128i q3 = _mm_or_si128(_mm_srli_epi16(_mm_and_si128(b0, top), 2), _mm_and_si128(b1, top));
        q3 = _mm_srli_epi16(_mm_or_si128(_mm_srli_epi16(q3, 2), _mm_and_si128(b2, top)), 2);
        const __m128i f0 = _mm_set1_epi8(char(0xf0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(ql + l), _mm_or_si128(_mm_and_si128(q0, m4), _mm_and_si128(_mm_slli_epi16(q2, 4), f0)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(ql + 32 + l), _mm_or_si128(_mm_and_si128(q1, m4), _mm_and_si128(_mm_slli_epi16(q3, 4), f0)));
        const __m128i h01 = _mm_or_si128(_mm_srli_epi16(_mm_and_si128(q0, m30), 4), _mm_srli_epi16(_mm_and_si128(q1, m30), 2));
        const __m128i h23 = _mm_or_si128(_mm_and_si128(q2, m30), _mm_slli_epi16(_mm_and_si128(q3, m30), 2));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qh + l), _mm_or_si128(h01, h23));
      }
    } else
#endif
    {
      for (int l = 0; l < 32; ++l) {
        const unsigned b0 = i[l], b1 = i[32 + l], b2 = i[64 + l];
        const unsigned q0 = b0 & 63, q1 = b1 & 63, q2 = b2 & 63, q3 = b0 >> 6 | (b1 >> 6) << 2 | (b2 >> 6) << 4;
        ql[l] = uint8_t((q0 & 15) | (q2 & 15) << 4);
        ql[l + 32] = uint8_t((q1 & 15) | (q3 & 15) << 4);
        qh[l] = uint8_t(q0 >> 4 | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
      }
    }
  }
}

// Q5_K x16 (quants.h): a stored super-block's 5-bit codes (qs nibble | qh bit)
// as five planes [p][l] (160 bytes), and back. Plane p's byte l: q(p) | a 3-bit
// fragment of q(5..7) << 5 (q5 bits 0-2 | q5 bits 3-4, q6 bit 0 | q6 bits 1-3 |
// q6 bit 4, q7 bits 0-1 | q7 bits 2-4), q(s) = the code of sub-block s at l.
void q5_planes(const uint8_t* blk, uint8_t* out, bool portable) {
  const uint8_t *qh = blk + 16, *qs = blk + 48;
#if defined(__SSE2__) || defined(_M_X64)
  if (!portable) {
    // 16 positions at a time (16-bit shifts of masked bytes move nothing across bytes)
    const __m128i m4 = _mm_set1_epi8(15), b4 = _mm_set1_epi8(0x10);
    const auto mask = [](int v) { return _mm_set1_epi8(char(v)); };
    for (int l = 0; l < 32; l += 16) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + l));
      __m128i q[8];
      for (int j = 0; j < 4; ++j) {
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 32 * j + l));
        q[2 * j] = _mm_and_si128(a, m4);
        q[2 * j + 1] = _mm_and_si128(_mm_srli_epi16(a, 4), m4);
      }
      // bit s of qh to bit 4 of code s
      for (int s = 0; s < 8; ++s) {
        const __m128i hb = s < 4 ? _mm_slli_epi16(h, 4 - s) : s == 4 ? h : _mm_srli_epi16(h, s - 4);
        q[s] = _mm_or_si128(q[s], _mm_and_si128(hb, b4));
      }
      const __m128i f0 = _mm_and_si128(_mm_slli_epi16(q[5], 5), mask(0xe0));
      const __m128i f1 = _mm_or_si128(_mm_and_si128(_mm_slli_epi16(q[5], 2), mask(0x60)), _mm_and_si128(_mm_slli_epi16(q[6], 7), mask(0x80)));
      const __m128i f2 = _mm_and_si128(_mm_slli_epi16(q[6], 4), mask(0xe0));
      const __m128i f3 = _mm_or_si128(_mm_and_si128(_mm_slli_epi16(q[6], 1), mask(0x20)), _mm_and_si128(_mm_slli_epi16(q[7], 6), mask(0xc0)));
      const __m128i f4 = _mm_and_si128(_mm_slli_epi16(q[7], 3), mask(0xe0));
      const __m128i f[5] = {f0, f1, f2, f3, f4};
      for (int p = 0; p < 5; ++p) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * p + l), _mm_or_si128(q[p], f[p]));
    }
  } else
#endif
  {
    for (int l = 0; l < 32; ++l) {
      unsigned q[8];
      for (int s = 0; s < 8; ++s) q[s] = (s % 2 ? qs[32 * (s / 2) + l] >> 4 : qs[32 * (s / 2) + l] & 15) | (qh[l] >> s & 1) << 4;
      const unsigned f[5] = {q[5] & 7, (q[5] >> 3) | (q[6] & 1) << 2, q[6] >> 1 & 7, (q[6] >> 4) | (q[7] & 3) << 1, q[7] >> 2};
      for (int p = 0; p < 5; ++p) out[32 * p + l] = uint8_t(q[p] | f[p] << 5);
    }
  }
}

void q5_unplanes(const uint8_t* in, uint8_t* blk, bool portable) {
  uint8_t *qh = blk + 16, *qs = blk + 48;
#if defined(__SSE2__) || defined(_M_X64)
  if (!portable) {
    const __m128i m4 = _mm_set1_epi8(15), b4 = _mm_set1_epi8(0x10), m31 = _mm_set1_epi8(31);
    const auto mask = [](int v) { return _mm_set1_epi8(char(v)); };
    for (int l = 0; l < 32; l += 16) {
      __m128i P[5], q[8];
      for (int p = 0; p < 5; ++p) P[p] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 32 * p + l));
      for (int p = 0; p < 5; ++p) q[p] = _mm_and_si128(P[p], m31);
      q[5] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(P[0], 5), mask(0x07)), _mm_and_si128(_mm_srli_epi16(P[1], 2), mask(0x18)));
      q[6] = _mm_or_si128(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(P[1], 7), mask(0x01)), _mm_and_si128(_mm_srli_epi16(P[2], 4), mask(0x0e))),
                          _mm_and_si128(_mm_srli_epi16(P[3], 1), mask(0x10)));
      q[7] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(P[3], 6), mask(0x03)), _mm_and_si128(_mm_srli_epi16(P[4], 3), mask(0x1c)));
      __m128i h = _mm_setzero_si128();
      for (int s = 0; s < 8; ++s) {
        const __m128i hb = _mm_and_si128(q[s], b4);
        h = _mm_or_si128(h, s < 4 ? _mm_srli_epi16(hb, 4 - s) : s == 4 ? hb : _mm_slli_epi16(hb, s - 4));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qh + l), h);
      for (int j = 0; j < 4; ++j)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * j + l),
                         _mm_or_si128(_mm_and_si128(q[2 * j], m4), _mm_slli_epi16(_mm_and_si128(q[2 * j + 1], m4), 4)));
    }
  } else
#endif
  {
    for (int l = 0; l < 32; ++l) {
      const unsigned P0 = in[l], P1 = in[32 + l], P2 = in[64 + l], P3 = in[96 + l], P4 = in[128 + l];
      const unsigned q[8] = {P0 & 31, P1 & 31, P2 & 31, P3 & 31, P4 & 31, P0 >> 5 | (P1 >> 5 & 3) << 3,
                             P1 >> 7 | (P2 >> 5) << 1 | (P3 >> 5 & 1) << 4, P3 >> 6 | (P4 >> 5) << 2};
      unsigned h = 0;
      for (int s = 0; s < 8; ++s) h |= (q[s] >> 4 & 1) << s;
      qh[l] = uint8_t(h);
      for (int j = 0; j < 4; ++j) qs[32 * j + l] = uint8_t((q[2 * j] & 15) | (q[2 * j + 1] & 15) << 4);
    }
  }
}

namespace {

// The code dwords of one 16-row group: for every 4 consecutive dwords c .. c + 3 of
// each row (16 bytes at src_at(row) + 4c), dword c + j of row r lands at
// dst + (c + j) * 64 + 4r. `quads` such runs of 4 dwords per row.
template <class Src>
inline void x16_codes(Src&& src_at, int64_t src_off, int64_t quads, uint8_t* dst) {
  for (int64_t c4 = 0; c4 < quads; ++c4) {
    uint8_t* d = dst + c4 * 4 * 64;
    for (int r0 = 0; r0 < kX16Rows; r0 += 4) {
#if defined(__SSE2__) || defined(_M_X64)
      // 4 rows x 4 dwords, transposed: each dword slot's 4 rows, contiguous
      __m128i a[4];
      for (int i = 0; i < 4; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src_at(r0 + i) + src_off + 16 * c4));
      const __m128i t0 = _mm_unpacklo_epi32(a[0], a[1]), t1 = _mm_unpacklo_epi32(a[2], a[3]);
      const __m128i t2 = _mm_unpackhi_epi32(a[0], a[1]), t3 = _mm_unpackhi_epi32(a[2], a[3]);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 0 * 64 + 4 * r0), _mm_unpacklo_epi64(t0, t1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 1 * 64 + 4 * r0), _mm_unpackhi_epi64(t0, t1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * 64 + 4 * r0), _mm_unpacklo_epi64(t2, t3));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 3 * 64 + 4 * r0), _mm_unpackhi_epi64(t2, t3));
#else
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) std::memcpy(d + j * 64 + 4 * (r0 + i), src_at(r0 + i) + src_off + 16 * c4 + 4 * j, 4);
#endif
    }
  }
}

// One group of 16 rows (row_bytes apart) into its x16 bytes: the layout of X16Map,
// written field by field (the codes 4 rows x 4 dwords at a time).
void x16_pack_group(GgmlType type, int64_t nb, int64_t row_bytes, const uint8_t* rows, uint8_t* gd) {
  if (type == GgmlType::q4_0) {
    for (int64_t b = 0; b < nb; ++b) {
      const auto at = [&](int r) { return rows + r * row_bytes + b * 18; };
      uint8_t* sc = gd + x16_q4_0_scales_at(b);
      for (int r = 0; r < kX16Rows; ++r) std::memcpy(sc + 2 * r, at(r), 2);
      x16_codes(at, 2, 1, gd + x16_q4_0_codes_at(nb, b));
    }
    return;
  }
  if (type == GgmlType::q8_0) {
    for (int64_t b = 0; b < nb; ++b) {
      const auto at = [&](int r) { return rows + r * row_bytes + b * 34; };
      uint8_t* u = gd + b * kX16Rows * 34;
      for (int r = 0; r < kX16Rows; ++r) std::memcpy(u + 2 * r, at(r), 2);
      x16_codes(at, 2, 2, u + 2 * kX16Rows);
    }
    return;
  }
  if (type == GgmlType::q6_k) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t planes[kX16Rows][192];
      uint8_t* u = gd + b * kX16Rows * kQ6_KBytes;
      for (int r = 0; r < kX16Rows; ++r) {
        const uint8_t* blk = rows + r * row_bytes + b * kQ6_KBytes;
        std::memcpy(u + 2 * r, blk + 208, 2);
        for (int p = 0; p < 16; ++p) u[kX16Q6Sc + p * 16 + r] = blk[192 + p];
        q6_planes(blk, planes[r], false);
      }
      x16_codes([&](int r) { return planes[r]; }, 0, 12, u + kX16Q6Codes);
    }
    return;
  }
  const bool q5 = type == GgmlType::q5_k;  // q4_k, or q5_k: q4_k's header, then its codes as planes
  const int64_t bb = q5 ? kQ5_KBytes : kQ4_KBytes;
  for (int64_t b = 0; b < nb; ++b) {
    const auto at = [&](int r) { return rows + r * row_bytes + b * bb; };
    uint8_t* u = gd + b * kX16Rows * bb;
    uint8_t planes[kX16Rows][160];
    for (int r = 0; r < kX16Rows; ++r) {
      const uint8_t* blk = at(r);
      std::memcpy(u + 2 * r, blk, 2);
      std::memcpy(u + 32 + 2 * r, blk + 2, 2);
      for (int p = 0; p < 12; ++p) u[64 + p * 16 + r] = blk[4 + p];
      if (q5) q5_planes(blk, planes[r], false);
    }
    if (q5)
      x16_codes([&](int r) { return planes[r]; }, 0, 10, u + kX16Q5Codes);
    else
      x16_codes(at, 16, 8, u + 256);
  }
}

// A repacked weight and the memory it owns.
struct X16Holder {
  BlockWeight w;
  void* mem = nullptr;
  ~X16Holder() { huge_free(mem); }
};
}  // namespace

bool block_x16_supported(const BlockWeight& w) {
  const GgmlType t = w.fmt ? w.fmt->type : GgmlType::f32;
  return (t == GgmlType::q4_0 || t == GgmlType::q4_k || t == GgmlType::q5_k || t == GgmlType::q6_k || t == GgmlType::q8_0) && !w.x16 && w.data &&
         w.n % kX16Rows == 0;
}

bool block_x16_preferred(const BlockWeight& w) {
  return block_x16_supported(w) && (kernels().block_x16_types >> int(w.fmt->type) & 1u);
}

Error block_repack_x16(const BlockWeight& w, std::shared_ptr<const BlockWeight>* out) {
  if (!block_x16_supported(w)) return bad("repack: only Q4_0, Q4_K, Q5_K, Q6_K and Q8_0 weights with a multiple of 16 rows are repacked");
  const int64_t nb = w.k / w.fmt->block, gbytes = kX16Rows * w.row_bytes;
  auto h = std::make_shared<X16Holder>();
  h->mem = huge_malloc(w.bytes());
  if (!h->mem) return Error::make(Status::out_of_memory, "repack: out of memory");
  uint8_t* dst = static_cast<uint8_t*>(h->mem);
  // A group's 16 rows go out block by block (a group is its 16 rows' bytes).
  const auto pack_group = [&](const uint8_t* rows, uint8_t* gd) { x16_pack_group(w.fmt->type, nb, w.row_bytes, rows, gd); };
  // Tasks of about 512 KiB of groups. Weights in a registered file mapping are
  // read with pread into a per-thread staging buffer (kept by the pool's
  // threads, 512 KiB-ish each): on VMs that shadow page tables the first touch
  // of the mapping's pages cost 2/3 of a load (sparq.h, read_file_bytes).
  const int64_t groups = w.n / kX16Rows, per = std::max<int64_t>(1, (int64_t(512) << 10) / gbytes);
  parallel_for((groups + per - 1) / per, [&](int64_t t) {
    const int64_t g0 = t * per, g1 = std::min(groups, g0 + per);
    const uint8_t* rows = w.data + g0 * gbytes;
    const size_t len = size_t((g1 - g0) * gbytes);
    thread_local std::vector<uint8_t> stage;
    try {
      if (stage.size() < len) stage.resize(len);
      if (read_file_bytes(rows, len, stage.data())) rows = stage.data();
    } catch (...) {
      // no staging memory: read from the mapping
    }
    for (int64_t g = g0; g < g1; ++g) pack_group(rows + (g - g0) * gbytes, dst + g * gbytes);
  });
  h->w = w;
  h->w.data = dst;
  h->w.x16 = true;
  *out = std::shared_ptr<const BlockWeight>(h, &h->w);
  return Error{};
}

const uint8_t* block_row(const BlockWeight& w, int64_t j, uint8_t* tmp) {
  if (!w.x16) return w.data + j * w.row_bytes;
  const int64_t nb = w.k / w.fmt->block, g = j / kX16Rows, r = j % kX16Rows, bb = w.fmt->bytes;
  const uint8_t* gd = w.data + g * kX16Rows * w.row_bytes;
  if (w.fmt->type == GgmlType::q6_k) {  // ql [0, 128), qh [128, 192), scales [192, 208), d [208, 210)
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* u = gd + b * kX16Rows * kQ6_KBytes;
      uint8_t* blk = tmp + b * kQ6_KBytes;
      std::memcpy(blk + 208, u + 2 * r, 2);
      for (int p = 0; p < 16; ++p) blk[192 + p] = u[kX16Q6Sc + p * 16 + r];
      uint8_t planes[192];
      for (int i = 0; i < 48; ++i) std::memcpy(planes + 4 * i, u + kX16Q6Codes + i * 64 + 4 * r, 4);
      q6_unplanes(planes, blk, false);
    }
    return tmp;
  }
  if (w.fmt->type == GgmlType::q5_k) {  // d, dmin, scales [4, 16), qh [16, 48), qs [48, 176)
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* u = gd + b * kX16Rows * kQ5_KBytes;
      uint8_t* blk = tmp + b * kQ5_KBytes;
      std::memcpy(blk, u + 2 * r, 2);
      std::memcpy(blk + 2, u + 32 + 2 * r, 2);
      for (int p = 0; p < 12; ++p) blk[4 + p] = u[64 + p * 16 + r];
      uint8_t planes[160];
      for (int i = 0; i < 40; ++i) std::memcpy(planes + 4 * i, u + kX16Q5Codes + i * 64 + 4 * r, 4);
      q5_unplanes(planes, blk, false);
    }
    return tmp;
  }
  const X16Map map{w.fmt->type, nb};
  for (int64_t b = 0; b < nb; ++b)
    map.each(b, r, [&](int64_t i, int64_t len, int64_t at) { std::memcpy(tmp + b * bb + i, gd + at, size_t(len)); });
  return tmp;
}

Error ggml_to_f32(const void* src, int type, int64_t count, float* out) {
  const BlockFormat* f = block_format(type);
  if (!f) return bad("dequantize: " + ggml_type_name(type) + " is not a GGUF type sparq reads");
  if (count < 0 || count % f->block)
    return bad(std::string("dequantize: ") + f->name + " needs a multiple of " + std::to_string(f->block) + " values");
  const int64_t blocks = count / f->block;
  const uint8_t* s = static_cast<const uint8_t*>(src);
  const int64_t per = std::max<int64_t>(1, (int64_t(1) << 14) / f->block);
  parallel_for((blocks + per - 1) / per, [&](int64_t t) {
    const int64_t b0 = t * per, b1 = std::min(blocks, b0 + per);
    f->to_f32(s + b0 * f->bytes, b1 - b0, out + b0 * f->block);
  });
  return Error{};
}

Error ggml_quantize(const float* x, int type, int64_t n, int64_t k, uint8_t* out) {
  const BlockFormat* f = block_format(type);
  if (!f || !f->quantize) return bad("quantize: sparq cannot write " + ggml_type_name(type));
  if (n < 1 || k < 1 || k % f->block)
    return bad(std::string("quantize: ") + f->name + " rows must be a positive multiple of " + std::to_string(f->block) + " values");
  for (int64_t i = 0; i < n * k; ++i)
    if (!std::isfinite(x[i])) return bad("quantize: value " + std::to_string(i) + " is not finite");
  const int64_t bpr = k / f->block;
  parallel_for(n, [&](int64_t j) { f->quantize(x + j * k, bpr, out + j * bpr * f->bytes); });
  return Error{};
}

// --- reference kernels --------------------------------------------------------------

void block_gemv_ref(const BlockGemvArgs& a, int64_t j0, int64_t j1) {
  const BlockWeight& w = *a.w;
  const int64_t k = w.k, groups = k / kGgmlGroup;
  std::vector<int8_t> q(static_cast<size_t>(k));
  std::vector<float> sc(static_cast<size_t>(groups)), off(static_cast<size_t>(groups));
  std::vector<uint8_t> tmp(static_cast<size_t>(w.row_bytes));
  for (int64_t j = j0; j < j1; ++j) {
    w.fmt->decode(block_row(w, j, tmp.data()), k / w.fmt->block, DecodedRow{q.data(), sc.data(), off.data()});
    for (int64_t i = 0; i < a.x.m; ++i) {
      const int8_t* xq = a.x.q + i * k;
      const float* xs = a.x.s + i * (k / a.x.act);
      const float* so = a.x.so + i * groups;
      float acc = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t dot = 0;
        for (int64_t c = g * kGgmlGroup; c < (g + 1) * kGgmlGroup; ++c) dot += int32_t(q[size_t(c)]) * xq[c];
        acc += sc[size_t(g)] * xs[g * kGgmlGroup / a.x.act] * float(dot) + off[size_t(g)] * so[g];
      }
      a.y[i * a.ldy + j] = acc;
    }
  }
}

void block_decode_ref(const BlockFormat& f, const uint8_t* row, int64_t k, DecodedRow out) { f.decode(row, k / f.block, out); }

bool x16_pack_ref(GgmlType type, const uint8_t* group, int64_t k, int64_t k_pad, int8_t* blk, int32_t* colsum, float* scales,
                  float* offsets) {
  std::memset(blk + k * kX16Rows, 0, size_t((k_pad - k) * kX16Rows));
  auto put = [&](int64_t r, int64_t v, int q) { blk[(v / 4 * kX16Rows + r) * 4 + v % 4] = int8_t(q); };
  if (type != GgmlType::q4_0 && type != GgmlType::q4_k) {
    // Q5_K, Q6_K, Q8_0: each row gathered back to its stored blocks (block_row)
    // and decoded by the reference decoder
    BlockWeight w;
    w.fmt = block_format(int(type));
    w.n = kX16Rows;
    w.k = k;
    w.row_bytes = k / w.fmt->block * w.fmt->bytes;
    w.data = group;
    w.x16 = true;
    const int64_t gsize = w.fmt->group, groups = k / gsize, step = gsize / kGgmlGroup;
    std::vector<uint8_t> stored(size_t(w.row_bytes));
    std::vector<int8_t> q(static_cast<size_t>(k));
    std::vector<float> sc(size_t(k / kGgmlGroup)), off(size_t(k / kGgmlGroup));
    bool m128 = false;
    for (int64_t r = 0; r < kX16Rows; ++r) {
      w.fmt->decode(block_row(w, r, stored.data()), k / w.fmt->block, DecodedRow{q.data(), sc.data(), off.data()});
      for (int64_t g = 0; g < groups; ++g) {
        int32_t sum = 0;
        for (int64_t v = g * gsize; v < (g + 1) * gsize; ++v) {
          put(r, v, q[size_t(v)]);
          sum += q[size_t(v)];
          m128 |= q[size_t(v)] == -128;
        }
        colsum[g * kX16Rows + r] = sum;
        scales[g * kX16Rows + r] = sc[size_t(g * step)];
        if (w.fmt->offsets) offsets[g * kX16Rows + r] = off[size_t(g * step)];
      }
    }
    return m128;
  }
  auto f16at = [](const uint8_t* p) { return half_to_float(uint16_t(p[0] | p[1] << 8)); };
  if (type == GgmlType::q4_0) {
    const int64_t blocks = k / 32;
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t r = 0; r < kX16Rows; ++r) {
        const uint8_t* codes = group + x16_q4_0_codes_at(blocks, b);
        scales[b * kX16Rows + r] = f16at(group + x16_q4_0_scales_at(b) + r * 2);
        int32_t sum = 0;
        for (int q = 0; q < 4; ++q)
          for (int c = 0; c < 4; ++c) {
            const uint8_t byte = codes[q * 64 + r * 4 + c];
            const int lo = (byte & 15) - 8, hi = (byte >> 4) - 8;  // values 4q + c and 16 + 4q + c
            put(r, b * 32 + 4 * q + c, lo);
            put(r, b * 32 + 16 + 4 * q + c, hi);
            sum += lo + hi;
          }
        colsum[b * kX16Rows + r] = sum;
      }
    return false;
  }
  // Q4_K: per super-block d, dmin, the scale planes and the codes (quants.cpp X16Map)
  for (int64_t sb = 0; sb < k / 256; ++sb) {
    const uint8_t* u = group + sb * kX16Rows * kQ4_KBytes;
    for (int64_t r = 0; r < kX16Rows; ++r) {
      const float d = f16at(u + 2 * r), dmin = f16at(u + 32 + 2 * r);
      uint8_t sc12[12];
      for (int p = 0; p < 12; ++p) sc12[p] = u[64 + 16 * p + r];
      for (int sub = 0; sub < 8; ++sub) {
        int sc, mn;
        scale_min_k4(sub, sc12, &sc, &mn);
        const int64_t gi = (sb * 8 + sub) * kX16Rows + r;
        scales[gi] = d * float(sc);
        offsets[gi] = -(dmin * float(mn));
        int32_t sum = 0;
        const int j = sub / 2, hi = sub % 2;
        for (int t = 0; t < 8; ++t)
          for (int c = 0; c < 4; ++c) {
            const uint8_t byte = u[256 + (8 * j + t) * 64 + r * 4 + c];
            const int q = hi ? byte >> 4 : byte & 15;
            put(r, sb * 256 + 64 * j + 32 * hi + 4 * t + c, q);
            sum += q;
          }
        colsum[(sb * 8 + sub) * kX16Rows + r] = sum;
      }
    }
  }
  return false;
}

namespace {

// x rows -> int8 per block of `act` values (scale max|x| / 127, x * 127 / max|x|
// rounded to nearest even), the block scales and the f32 offset terms (scale *
// int sum) per 16 and 32.
void quantize_blocks(const float* x, int64_t m, int64_t k, int64_t act, const BlockActsOut& o) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t b = 0; b < k / act; ++b) {
      const float* xb = x + i * k + b * act;
      float amax = 0.f;
      for (int64_t c = 0; c < act; ++c) amax = std::fmax(amax, std::fabs(xb[c]));
      const float d = amax / 127.f, id = d > 0.f ? 127.f / amax : 0.f;
      o.s[i * (k / act) + b] = d;
      int32_t prev = 0;  // the sum of the first 16 of each 32
      for (int64_t g = 0; g < act / 16; ++g) {
        int32_t sum = 0;
        for (int c = 0; c < 16; ++c) {
          const float v = xb[16 * g + c] * id;
          const int r = std::isfinite(v) ? clampi(int(std::nearbyint(v)), -127, 127) : 0;
          o.q[i * k + b * act + 16 * g + c] = int8_t(r);
          sum += r;
        }
        const int64_t gi = i * (k / 16) + b * (act / 16) + g;
        o.so[gi] = d * float(sum);
        if (g % 2) o.so32[gi / 2] = d * float(prev + sum);
        prev = sum;
      }
    }
}


}  // namespace

Error linear_blocks(const BlockWeight& w, const float* x, int64_t m, float* y) {
  if (!w.fmt || !w.data) return bad("linear: the block weight is empty");
  if (m < 1) return Error{};
  const KernelTable& t = kernels();
  const int64_t n = w.n, k = w.k;
  if (m <= kBlockGemvMaxM) {
    const int64_t act = w.fmt->act;
    // the calling thread's buffer, reused: no allocation (and page faults) per decoded token
    thread_local std::vector<char> buf;
    try {
      if (buf.size() < block_acts_bytes(m, k, act) + 64) buf.resize(block_acts_bytes(m, k, act) + 64);
    } catch (const std::bad_alloc&) {
      return Error::make(Status::out_of_memory, "linear: out of memory");
    }
    const BlockActsOut o = block_acts_layout(reinterpret_cast<void*>(round_up(int64_t(reinterpret_cast<uintptr_t>(buf.data())), 64)), m, k, act);
    t.block_quant(x, m, k, act, o);
    BlockGemvArgs a;
    a.w = &w;
    a.x = BlockActs{o.q, o.s, o.so, o.so32, m, k, act};
    a.y = y;
    a.ldy = n;
    // guided ranges of at least 1 / (8 x threads) of the rows (x16: whole groups)
    const int64_t unit = w.x16 ? kX16Rows : 4;
    const int64_t least = round_up(std::max<int64_t>(n / (8 * num_threads()), 1), unit);
    parallel_ranges(n, unit, least, [&](int64_t j0, int64_t j1) { t.block_gemv(a, j0, j1); });
    return Error{};
  }
  // prefill: strips of rows decoded to int8 + group scales (and offsets) for the int8 GEMM
  const BlockFormat& f = *w.fmt;
  const int64_t group = f.group, groups = k / group;
  Pack16Fn pack16;
  if (w.x16 && block_x16_packs(f.type))  // straight from the repacked groups into the GEMM's layout
    pack16 = [&](int64_t j0, int64_t k_pad, int8_t* blk, int32_t* colsum, float* scales, float* offsets) {
      return t.x16_pack(f.type, w.data + j0 * w.row_bytes, k, k_pad, blk, colsum, scales, offsets);
    };
  return linear_s8_expanded_blocks(n, k, group, f.act, [&](int64_t j, int8_t* row, float* scales, float* offsets) {
    // stored rows (x16 weights without pack16: gathered back first)
    thread_local std::vector<float> sc;
    thread_local std::vector<uint8_t> stored;
    if (int64_t(sc.size()) < k / 8) sc.resize(size_t(k / 8));
    if (w.x16 && int64_t(stored.size()) < w.row_bytes) stored.resize(size_t(w.row_bytes));
    const DecodedRow r{row, sc.data(), sc.data() + k / 16};
    t.block_decode_row(f, block_row(w, j, stored.data()), k, r);
    const int64_t step = group / kGgmlGroup;  // decoded scales per group (equal within a group)
    for (int64_t g = 0; g < groups; ++g) scales[g] = r.scale[g * step];
    if (offsets)
      for (int64_t g = 0; g < groups; ++g) offsets[g] = r.offset[g * step];
  }, f.offsets, x, m, y, pack16, f.lo, f.hi);
}

void block_quant_ref(const float* x, int64_t m, int64_t k, int64_t act, const BlockActsOut& o) { quantize_blocks(x, m, k, act, o); }

size_t block_acts_bytes(int64_t m, int64_t k, int64_t act) {
  auto a64 = [](int64_t b) { return size_t(round_up(b, 64)); };
  return a64(m * k) + a64(m * (k / act) * 4) + a64(m * (k / 16) * 4) + a64(m * (k / 32) * 4);
}

BlockActsOut block_acts_layout(void* mem, int64_t m, int64_t k, int64_t act) {
  auto a64 = [](int64_t b) { return size_t(round_up(b, 64)); };
  char* p = static_cast<char*>(mem);
  BlockActsOut o;
  o.q = reinterpret_cast<int8_t*>(p);
  p += a64(m * k);
  o.s = reinterpret_cast<float*>(p);
  p += a64(m * (k / act) * 4);
  o.so = reinterpret_cast<float*>(p);
  p += a64(m * (k / 16) * 4);
  o.so32 = reinterpret_cast<float*>(p);
  return o;
}

}  // namespace sparq
