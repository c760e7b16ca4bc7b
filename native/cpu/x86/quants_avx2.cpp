// quants_avx2.cpp - the GGUF block formats on AVX2: per-type decoders to the
// shared int8 + scale / offset form (quants.h; the prefill strips), the fused
// decode GEMV, and the per-32 activation quantizer.
//
// The GEMV decodes each block in registers and multiplies it by every
// activation row at once: per 32 values one vpmaddubsw of the codes by the
// int8 activations (unsigned codes <= 63 as they are: pair sums <= 2 x 63 x 127;
// signed ones as |w| by sign(x, w): <= 2 x 127 x 127, both < 2^15), one vpmaddwd
// by the integer sub-block scales (exact int32), then one cvt + fma by the
// block's f32 factor times the activation block's scale. Offsets (mins, and the
// bias of unsigned codes) are taken back with the activation sums per 16.
#include <cassert>
#include <immintrin.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../quants.h"
#include "avx2_math.h"
#include "quants_x86.h"

namespace sparq {
namespace {

using avx2::hmax;
using avx2::hsum;

inline void store32(int8_t* dst, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v); }
inline void put2(float* p, float v) { p[0] = p[1] = v; }


void dec_q4_0(const uint8_t* s, int64_t blocks, DecodedRow r) {
  for (int64_t i = 0; i < blocks; ++i, s += 18) {
    store32(r.q + 32 * i, _mm256_sub_epi8(nib32(s + 2), _mm256_set1_epi8(8)));
    put2(r.scale + 2 * i, h2f(s));
  }
}
void dec_q4_1(const uint8_t* s, int64_t blocks, DecodedRow r) {
  for (int64_t i = 0; i < blocks; ++i, s += 20) {
    store32(r.q + 32 * i, nib32(s + 4));
    put2(r.scale + 2 * i, h2f(s));
    put2(r.offset + 2 * i, h2f(s + 2));
  }
}
void dec_q5_0(const uint8_t* s, int64_t blocks, DecodedRow r) {
  for (int64_t i = 0; i < blocks; ++i, s += 22) {
    uint32_t qh;
    std::memcpy(&qh, s + 2, 4);
    store32(r.q + 32 * i, _mm256_sub_epi8(_mm256_or_si256(nib32(s + 6), bits_x16(qh)), _mm256_set1_epi8(16)));
    put2(r.scale + 2 * i, h2f(s));
  }
}
void dec_q5_1(const uint8_t* s, int64_t blocks, DecodedRow r) {
  for (int64_t i = 0; i < blocks; ++i, s += 24) {
    uint32_t qh;
    std::memcpy(&qh, s + 4, 4);
    store32(r.q + 32 * i, _mm256_or_si256(nib32(s + 8), bits_x16(qh)));
    put2(r.scale + 2 * i, h2f(s));
    put2(r.offset + 2 * i, h2f(s + 2));
  }
}
void dec_q8_0(const uint8_t* s, int64_t blocks, DecodedRow r) {
  for (int64_t i = 0; i < blocks; ++i, s += kQ8_0Bytes) {
    store32(r.q + 32 * i, load32(s + 2));
    put2(r.scale + 2 * i, h2f(s));
  }
}
void dec_iq4_nl(const uint8_t* s, int64_t blocks, DecodedRow r) {
  const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4)));
  for (int64_t i = 0; i < blocks; ++i, s += 18) {
    store32(r.q + 32 * i, _mm256_shuffle_epi8(tab, nib32(s + 2)));
    put2(r.scale + 2 * i, h2f(s));
  }
}
void dec_iq4_xs(const uint8_t* s, int64_t blocks, DecodedRow r) {
  const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4)));
  for (int64_t i = 0; i < blocks; ++i, s += 136) {
    const float d = h2f(s);
    uint16_t sh;
    std::memcpy(&sh, s + 2, 2);
    for (int ib = 0; ib < 8; ++ib) {
      const int ls = ((s[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
      store32(r.q + 256 * i + 32 * ib, _mm256_shuffle_epi8(tab, nib32(s + 8 + 16 * ib)));
      put2(r.scale + 16 * i + 2 * ib, d * float(ls - 32));
    }
  }
}
inline void scale_min_k4(int j, const uint8_t* s, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}
template <bool Q5>
void dec_qk45(const uint8_t* s, int64_t blocks, DecodedRow r) {
  const __m256i lo4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < blocks; ++i, s += Q5 ? 176 : 144) {
    const float d = h2f(s), dmin = h2f(s + 2);
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      scale_min_k4(j, s + 4, &sc, &mn);
      put2(r.scale + 16 * i + 2 * j, d * float(sc));
      put2(r.offset + 16 * i + 2 * j, -(dmin * float(mn)));
    }
    const uint8_t* qs = s + (Q5 ? 48 : 16);
    const __m256i hb = Q5 ? load32(s + 16) : _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      const __m256i b = load32(qs + 32 * j);
      __m256i lo = _mm256_and_si256(b, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), lo4);
      if (Q5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
      }
      store32(r.q + 256 * i + 64 * j, lo);
      store32(r.q + 256 * i + 64 * j + 32, hi);
    }
  }
}
void dec_q6_k(const uint8_t* s, int64_t blocks, DecodedRow r) {
  const __m256i lo4 = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3), m32 = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < blocks; ++i, s += 210) {
    const float d = h2f(s + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(s + 192);
    for (int g = 0; g < 16; ++g) r.scale[16 * i + g] = d * float(sc[g]);
    for (int n = 0; n < 2; ++n) {
      const __m256i l0 = load32(s + 64 * n), l1 = load32(s + 64 * n + 32), h = load32(s + 128 + 32 * n);
      const __m256i parts[4] = {_mm256_and_si256(l0, lo4), _mm256_and_si256(l1, lo4), _mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                                _mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4)};
      for (int t = 0; t < 4; ++t) {
        const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * t), three), 4);
        store32(r.q + 256 * i + 128 * n + 32 * t, _mm256_sub_epi8(_mm256_or_si256(parts[t], hi), m32));
      }
    }
  }
}
void dec_q2_k(const uint8_t* s, int64_t blocks, DecodedRow r) {
  const __m256i three = _mm256_set1_epi8(3);
  for (int64_t i = 0; i < blocks; ++i, s += 84) {
    const float d = h2f(s + 80), dmin = h2f(s + 82);
    for (int g = 0; g < 16; ++g) {
      r.scale[16 * i + g] = d * float(s[g] & 0xF);
      r.offset[16 * i + g] = -(dmin * float(s[g] >> 4));
    }
    for (int n = 0; n < 2; ++n) {
      const __m256i b = load32(s + 16 + 32 * n);
      for (int t = 0; t < 4; ++t) store32(r.q + 256 * i + 128 * n + 32 * t, _mm256_and_si256(_mm256_srli_epi16(b, 2 * t), three));
    }
  }
}
void dec_q3_k(const uint8_t* s, int64_t blocks, DecodedRow r) {
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
  for (int64_t i = 0; i < blocks; ++i, s += 110) {
    const float d = h2f(s + 108);
    const uint8_t* sc = s + 96;
    for (int g = 0; g < 16; ++g) {
      const int lo = g < 8 ? sc[g] & 0xF : sc[g - 8] >> 4, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
      r.scale[16 * i + g] = d * float((lo | hi << 4) - 32);
    }
    const __m256i hm = load32(s);
    for (int n = 0; n < 2; ++n) {
      const __m256i b = load32(s + 32 + 32 * n);
      for (int t = 0; t < 4; ++t) {
        const __m256i h = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + t), one), 2);
        const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 2 * t), three), h);
        store32(r.q + 256 * i + 128 * n + 32 * t, _mm256_sub_epi8(q, four));
      }
    }
  }
}

// --- the fused decode GEMV ------------------------------------------------------
// The 32-value types (activations in blocks of 32): visit(block, f) calls
// f(0, u, ones, dw, off, off) with u the 32 weight codes (unsigned in [0, 31], or
// signed in [-127, 127] when the type's kSigned), dw the block's f32 scale and
// off the per-weight f32 offset (a min, or the bias of unsigned codes), so that
// w = dw * u + off.
inline __m256i isc2(int a, int b) { return _mm256_set_m128i(_mm_set1_epi16(int16_t(b)), _mm_set1_epi16(int16_t(a))); }

struct TQ4_0 {
  static constexpr int kBlock = 32, kBytes = 18;
  static constexpr bool kSigned = false, kOff = true;
  template <class F> static void visit(const uint8_t* b, F&& f) {
    const float d = h2f(b);
    f(0, nib32(b + 2), _mm256_set1_epi16(1), d, -8.f * d, -8.f * d);
  }
};
struct TQ4_1 {
  static constexpr int kBlock = 32, kBytes = 20;
  static constexpr bool kSigned = false, kOff = true;
  template <class F> static void visit(const uint8_t* b, F&& f) {
    const float m = h2f(b + 2);
    f(0, nib32(b + 4), _mm256_set1_epi16(1), h2f(b), m, m);
  }
};
struct TQ5_0 {
  static constexpr int kBlock = 32, kBytes = 22;
  static constexpr bool kSigned = false, kOff = true;
  template <class F> static void visit(const uint8_t* b, F&& f) {
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    const float d = h2f(b);
    f(0, _mm256_or_si256(nib32(b + 6), bits_x16(qh)), _mm256_set1_epi16(1), d, -16.f * d, -16.f * d);
  }
};
struct TQ5_1 {
  static constexpr int kBlock = 32, kBytes = 24;
  static constexpr bool kSigned = false, kOff = true;
  template <class F> static void visit(const uint8_t* b, F&& f) {
    uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    const float m = h2f(b + 2);
    f(0, _mm256_or_si256(nib32(b + 8), bits_x16(qh)), _mm256_set1_epi16(1), h2f(b), m, m);
  }
};
struct TQ8_0 {
  static constexpr int kBlock = kQK8_0, kBytes = kQ8_0Bytes;
  static constexpr bool kSigned = true, kOff = false;
  template <class F> static void visit(const uint8_t* b, F&& f) { f(0, load32(b + 2), _mm256_set1_epi16(1), h2f(b), 0.f, 0.f); }
};
struct TIQ4_NL {
  static constexpr int kBlock = 32, kBytes = 18;
  static constexpr bool kSigned = true, kOff = false;
  template <class F> static void visit(const uint8_t* b, F&& f) {
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4)));
    f(0, _mm256_shuffle_epi8(tab, nib32(b + 2)), _mm256_set1_epi16(1), h2f(b), 0.f, 0.f);
  }
};

struct TIQ4_XS {
  static constexpr bool kSigned = true, kOff = false;
  static constexpr int kBytes = 136;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_iq4_xs(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4)));
#pragma GCC unroll 8
    for (int ib = 0; ib < 8; ++ib) f(ib, _mm256_shuffle_epi8(tab, nib32(b + 8 + 16 * ib)));
  }
};
template <bool Q5>
struct TQK45 {
  static constexpr bool kSigned = false, kOff = true;
  static constexpr int kBytes = Q5 ? 176 : 144;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_qk45(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m256i lo4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const uint8_t* qs = b + (Q5 ? 48 : 16);
    const __m256i hb = Q5 ? load32(b + 16) : _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i v = load32(qs + 32 * j);
      __m256i lo = _mm256_and_si256(v, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
      if (Q5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
      }
      f(2 * j, lo);
      f(2 * j + 1, hi);
    }
  }
};
struct TQ6_K {
  static constexpr bool kSigned = false, kOff = true;
  static constexpr int kBytes = 210;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_q6_k(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m256i lo4 = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3);
    for (int n = 0; n < 2; ++n) {
      const __m256i l0 = load32(b + 64 * n), l1 = load32(b + 64 * n + 32), h = load32(b + 128 + 32 * n);
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        const __m256i lo = t == 0 ? _mm256_and_si256(l0, lo4) : t == 1 ? _mm256_and_si256(l1, lo4)
                         : t == 2 ? _mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4) : _mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4);
        f(4 * n + t, _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * t), three), 4)));
      }
    }
  }
};
struct TQ2_K {
  static constexpr bool kSigned = false, kOff = true;
  static constexpr int kBytes = 84;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_q2_k(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m256i three = _mm256_set1_epi8(3);
    for (int n = 0; n < 2; ++n) {
      const __m256i v = load32(b + 16 + 32 * n);
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) f(4 * n + t, _mm256_and_si256(_mm256_srli_epi16(v, 2 * t), three));
    }
  }
};
struct TQ3_K {
  static constexpr bool kSigned = false, kOff = true;
  static constexpr int kBytes = 110;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_q3_k(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    const __m256i hm = load32(b);
    for (int n = 0; n < 2; ++n) {
      const __m256i v = load32(b + 32 + 32 * n);
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        const __m256i h = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + t), one), 2);
        f(4 * n + t, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2 * t), three), h));
      }
    }
  }
};

// K rows: each 32 values take the scales of their two groups of 16 from sc16 by
// one vpshufb, their int32 sums (exact: |u| <= 63, |x| <= 127, |scale| <= 128)
// one cvt + fma by d * their activation block's scale (two accumulator chains);
// the offsets meet the activation sums per 16 (scaled) once per super-block.
template <class T, int MR>
void kquant_rows(const BlockGemvArgs& a, int64_t i0, int64_t j) {
  const int64_t k = a.w->k, nsb = k / 256, g16 = k / 16;
  assert(a.x.act == 32);
  const uint8_t* row = a.w->data + j * a.w->row_bytes;
  // pick[s]: lanes 0-7 <- int16 2s, lanes 8-15 <- int16 2s + 1 of a 128-bit half
  alignas(32) static const int8_t kPick[4][32] = {
      {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
      {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
      {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
      {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15}};
  const int8_t* xq[MR];
  const float* xs[MR];
  const float* so[MR];
  __m256 acc[2][MR], offv[MR];
  for (int i = 0; i < MR; ++i) {
    xq[i] = a.x.q + (i0 + i) * k;
    xs[i] = a.x.s + (i0 + i) * (k / 32);
    so[i] = a.x.so + (i0 + i) * g16;
    acc[0][i] = acc[1][i] = offv[i] = _mm256_setzero_ps();
  }
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* b = row + sb * T::kBytes;
    KScales ks;
    T::prep(b, &ks);
    const __m256i lo = _mm256_permute2x128_si256(ks.sc16, ks.sc16, 0x00), hi = _mm256_permute2x128_si256(ks.sc16, ks.sc16, 0x11);
    // d * the scale of each of the 8 activation blocks, broadcast from memory per
    // block (a vpermps per 32 values costs 3 uops and 5 cycles on Zen 1)
    alignas(32) float dx[MR][8];
    for (int i = 0; i < MR; ++i) _mm256_store_ps(dx[i], _mm256_mul_ps(_mm256_loadu_ps(xs[i] + 8 * sb), _mm256_set1_ps(ks.d)));
    T::codes(b, [&](int sub, __m256i u) {
      const __m256i isc = _mm256_shuffle_epi8(sub < 4 ? lo : hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(kPick[sub & 3])));
      const int64_t c = sb * 256 + 32 * sub;
      const __m256i au = T::kSigned ? _mm256_sign_epi8(u, u) : u;
      for (int i = 0; i < MR; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[i] + c));
        const __m256i pr = _mm256_madd_epi16(_mm256_maddubs_epi16(au, T::kSigned ? _mm256_sign_epi8(xv, u) : xv), isc);
        acc[sub & 1][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pr), _mm256_broadcast_ss(&dx[i][sub]), acc[sub & 1][i]);
      }
    });
    if (T::kOff) {  // sum_g mo16[g] * (x scale * int sum of the group), in f32
      const __m256 m0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(ks.mo16)));
      const __m256 m1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(ks.mo16, 1)));
      for (int i = 0; i < MR; ++i) {
        const __m256 t = _mm256_fmadd_ps(m1, _mm256_loadu_ps(so[i] + sb * 16 + 8), _mm256_mul_ps(m0, _mm256_loadu_ps(so[i] + sb * 16)));
        offv[i] = _mm256_fmadd_ps(t, _mm256_set1_ps(ks.dO), offv[i]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    const __m256 t = _mm256_add_ps(acc[0][i], acc[1][i]);
    a.y[(i0 + i) * a.ldy + j] = hsum(T::kOff ? _mm256_add_ps(t, offv[i]) : t);
  }
}

// Two accumulator sets (by the parity of the 32-value sub-block) so that the fma
// and offset chains do not serialise on their latency. Visitors unroll their
// loops and the row loop pairs blocks, so the parity folds to a constant.
template <class T, int MR>
void fused_rows(const BlockGemvArgs& a, int64_t i0, int64_t j) {
  const int64_t k = a.w->k, nb = k / 32, blocks = k / T::kBlock;
  const uint8_t* row = a.w->data + j * a.w->row_bytes;
  const int8_t* xq[MR];
  const float* xs[MR];
  const float* so32[MR];
  __m256 acc[2][MR];
  float off[2][MR];
  for (int i = 0; i < MR; ++i) {
    xq[i] = a.x.q + (i0 + i) * k;
    xs[i] = a.x.s + (i0 + i) * nb;
    so32[i] = a.x.so32 + (i0 + i) * nb;
    acc[0][i] = acc[1][i] = _mm256_setzero_ps();
    off[0][i] = off[1][i] = 0.f;
  }
  auto block = [&](int64_t blk, auto par) {
    const int64_t b0 = blk * (T::kBlock / 32);
    T::visit(row + blk * T::kBytes, [&](int sub, __m256i u, __m256i isc, float dw, float o0, float o1) {
      const int p = (sub + decltype(par)::value) & 1;
      const int64_t b = b0 + sub;
      const __m256i au = T::kSigned ? _mm256_sign_epi8(u, u) : u;
      for (int i = 0; i < MR; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[i] + 32 * b));
        const __m256i pr = _mm256_maddubs_epi16(au, T::kSigned ? _mm256_sign_epi8(xv, u) : xv);
        acc[p][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(pr, isc)), _mm256_set1_ps(dw * xs[i][b]), acc[p][i]);
        if (T::kOff) off[p][i] += o0 * so32[i][b];
      }
    });
  };
  int64_t blk = 0;
  for (; blk + 2 <= blocks; blk += 2) {
    block(blk, std::integral_constant<int, 0>{});
    block(blk + 1, std::integral_constant<int, 1>{});
  }
  if (blk < blocks) block(blk, std::integral_constant<int, 0>{});
  for (int i = 0; i < MR; ++i) a.y[(i0 + i) * a.ldy + j] = hsum(_mm256_add_ps(acc[0][i], acc[1][i])) + (off[0][i] + off[1][i]);
}

// Q4_0 repacked 16 rows at a time (x16, quants.h), one half of the group (8
// rows, lane r = row 16g + 8h + r) per pass: per block and quarter of its codes
// two vpmaddubsw (low / high nibbles with 4 activation bytes broadcast), their
// int16 sums added (8 x 2 x 15 x 127 = 30480 fits), one vpmaddwd per block.
// sum (code - 8) x = sum code x - 8 sum x (the activation block's so32).
template <int MR>
void x16_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nb = k / 32;
  const uint8_t* group = a.w->data + g * nb * (kX16Rows * 18);
  const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  if constexpr (MR == 1) {  // decode: both halves in one pass (one stream, each broadcast used twice)
    // The next unit's 36 lines (the next group's first unit after the last) are
    // asked for 5 per block through this one: not 8 KiB ahead in bursts as the
    // AVX-512 body does (Zen 1, 2 threads, 2048 x 768 from DRAM: 85 us; a burst for
    // the current unit: 61; none: 70; PERFORMANCE.md)
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    const int8_t* xq = a.x.q + i0 * k;
    const float* xs = a.x.s + i0 * nb;
    const float* so = a.x.so32 + i0 * nb;
    const uint8_t* wend = a.w->data + a.w->bytes();
    x16_q4_0_blocks(group, nb, false, [&](int64_t b, const uint8_t* scales, const uint8_t* codes) {
      const int64_t u0 = b - b % kX16Q4Unit;
      const uint8_t* next = group + x16_q4_0_scales_at(u0) + x16_q4_0_unit_blocks(nb, b) * 288;
      prefetch_lines(next, 5 * (b % kX16Q4Unit), 5, 36, wend);
      __m256i p16[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (int q = 0; q < 4; ++q) {
        int32_t x0, x1;
        std::memcpy(&x0, xq + b * 32 + 4 * q, 4);
        std::memcpy(&x1, xq + b * 32 + 16 + 4 * q, 4);
        const __m256i b0 = _mm256_set1_epi32(x0), b1 = _mm256_set1_epi32(x1);
        for (int h = 0; h < 2; ++h) {
          const __m256i v = load32(codes + q * 64 + h * 32);
          p16[h] = _mm256_add_epi16(p16[h], _mm256_maddubs_epi16(_mm256_and_si256(v, m4), b0));
          p16[h] = _mm256_add_epi16(p16[h], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), b1));
        }
      }
      const __m256 vs = _mm256_set1_ps(xs[b]), vo = _mm256_set1_ps(-8.f * so[b]);
      for (int h = 0; h < 2; ++h) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + h * 16)));
        acc[h] = _mm256_fmadd_ps(d, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p16[h], ones)), vs, vo), acc[h]);
      }
    });
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(a.y + i0 * a.ldy + g * kX16Rows + h * 8, acc[h]);
    return;
  }
  for (int h = 0; h < 2; ++h) {
    __m256 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
    // the first pass streams the group from memory (the second finds it in cache)
    x16_q4_0_blocks(group, nb, h == 0, [&](int64_t b, const uint8_t* scales, const uint8_t* codes) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + h * 16)));
      __m256i lo[4], hi[4];
      for (int q = 0; q < 4; ++q) {
        const __m256i v = load32(codes + q * 64 + h * 32);
        lo[q] = _mm256_and_si256(v, m4);
        hi[q] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      }
      for (int i = 0; i < MR; ++i) {
        const int8_t* xb = a.x.q + (i0 + i) * k + b * 32;
        __m256i p16 = _mm256_setzero_si256();
        for (int q = 0; q < 4; ++q) {
          int32_t x0, x1;
          std::memcpy(&x0, xb + 4 * q, 4);
          std::memcpy(&x1, xb + 16 + 4 * q, 4);
          p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(lo[q], _mm256_set1_epi32(x0)));
          p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(hi[q], _mm256_set1_epi32(x1)));
        }
        const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
        const float xs = a.x.s[(i0 + i) * nb + b], so = a.x.so32[(i0 + i) * nb + b];
        acc[i] = _mm256_fmadd_ps(d, _mm256_fmadd_ps(p, _mm256_set1_ps(xs), _mm256_set1_ps(-8.f * so)), acc[i]);
      }
    });
    for (int i = 0; i < MR; ++i) _mm256_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows + h * 8, acc[i]);
  }
}

// The 6-bit scales and mins of a Q4_K / Q5_K x16 super-block u's 16 rows, sub-block
// by sub-block, as bytes: ggml's get_scale_min_k4 on the 12 byte planes, 16 rows
// a vector (16-bit shifts of masked bytes move nothing across bytes).
inline void x16k_scale_min_bytes(const uint8_t* u, uint8_t (*sc8)[16], uint8_t (*mn8)[16]) {
  const __m128i m6 = _mm_set1_epi8(63), m4b = _mm_set1_epi8(15), hi2 = _mm_set1_epi8(char(0xc0));
  __m128i P[12];
  for (int q = 0; q < 12; ++q) P[q] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 64 + 16 * q));
  for (int q = 0; q < 4; ++q) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sc8[q]), _mm_and_si128(P[q], m6));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mn8[q]), _mm_and_si128(P[q + 4], m6));
    // sub-block 4 + q: low 4 bits from plane 8 + q, top 2 from the tops of planes q / 4 + q
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sc8[q + 4]), _mm_or_si128(_mm_and_si128(P[q + 8], m4b), _mm_srli_epi16(_mm_and_si128(P[q], hi2), 2)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mn8[q + 4]),
                     _mm_or_si128(_mm_and_si128(_mm_srli_epi16(P[q + 8], 4), m4b), _mm_srli_epi16(_mm_and_si128(P[q + 4], hi2), 2)));
  }
}

// The codes (u8 <= 31) of sub-block sub, slot t, rows 8h .. 8h + 7 of a Q5_K x16
// super-block u: plane sub's low 5 bits for sub < 5, else gathered from the planes'
// top 3 bits (16-bit shifts: the bits a byte takes from its neighbour fall outside
// the masks)
[[gnu::always_inline]] inline __m256i x16q5_codes(const uint8_t* u, int sub, int t, int h) {
  const auto P = [&](int p) { return load32(u + kX16Q5Codes + (8 * p + t) * 64 + 32 * h); };
  const auto bits = [](__m256i v, int shift, int mask) { return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(char(mask))); };
  if (sub < 5) return _mm256_and_si256(P(sub), _mm256_set1_epi8(0x1f));
  if (sub == 5) return _mm256_or_si256(bits(P(0), 5, 0x07), bits(P(1), 2, 0x18));
  if (sub == 6) return _mm256_or_si256(_mm256_or_si256(bits(P(1), 7, 0x01), bits(P(2), 4, 0x0e)), bits(P(3), 1, 0x10));
  return _mm256_or_si256(bits(P(3), 6, 0x03), bits(P(4), 3, 0x1c));
}

// Bytes p[0..8) as 8 int32 lanes (rows 8h .. 8h + 7 of x16k_scale_min_bytes' rows).
inline __m256i lanes8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }

// Q4_K (Q5 = false) and Q5_K (Q5 = true) repacked 16 rows at a time (x16,
// quants.h; Q5_K: Q4_K's header, then its codes as five planes), one activation
// row, both halves of the group per pass (one stream, each broadcast used twice).
// Per super-block the 16 rows' scales and mins are decoded once as bytes; per
// sub-block s the codes (Q4_K: a nibble; Q5_K: plane s's low 5 bits for s < 5,
// else gathered from 2-3 planes' top bits in 5-8 ops, u8 <= 31) by
// vpmaddubsw with the broadcast activations into int16 pairs (Q4_K: all 8 slots,
// 8 x 2 x 15 x 127 = 30480 fits; Q5_K: 4 slots at a time, 4 x 2 x 31 x 127 = 31496),
// then sc x p x xs and mn x so summed over the sub-blocks, d and dmin applied once
// per super-block. The next super-block (the next group's first after the last) is
// asked for a few lines per sub-block (Zen 1, 2 threads, Q4_K 2048 x 768 from DRAM:
// 96 us with the AVX-512 body's 8 KiB bursts, 71 with no software prefetch).
template <bool Q5>
void x16k_row(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  constexpr int64_t kBytes = Q5 ? 176 : 144, kLines = (kX16Rows * kBytes + 63) / 64, kPer = (kLines + 7) / 8;
  constexpr int kSlots = Q5 ? 4 : 8;  // slots whose int16 pairs are summed before vpmaddwd
  const int64_t k = a.w->k, nsb = k / 256, nb32 = k / 32;
  const uint8_t* base = a.w->data + g * nsb * (kX16Rows * kBytes), *wend = a.w->data + a.w->bytes();
  const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* u = base + sb * (kX16Rows * kBytes);
    const uint8_t* next = u + kX16Rows * kBytes;
    __m256 d[2], dmin[2], sum_sc[2], sum_mn[2];  // sums over the sub-blocks of sc x p x xs and mn x so
    for (int h = 0; h < 2; ++h) {
      sum_sc[h] = sum_mn[h] = _mm256_setzero_ps();
      d[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h)));
      dmin[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 32 + 16 * h)));
    }
    alignas(16) uint8_t sc8[8][16], mn8[8][16];
    x16k_scale_min_bytes(u, sc8, mn8);
#pragma GCC unroll 8
    for (int sub = 0; sub < 8; ++sub) {
      prefetch_lines(next, kPer * sub, kPer, kLines, wend);
      const int j = sub / 2, high = sub % 2;
      const int64_t s = sb * 8 + sub;
      const int8_t* xb = a.x.q + i0 * k + s * 32;
      __m256i i32[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (int t0 = 0; t0 < 8; t0 += kSlots) {
        __m256i p16[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
        for (int t = t0; t < t0 + kSlots; ++t) {
          int32_t x4;
          std::memcpy(&x4, xb + 4 * t, 4);
          const __m256i bx = _mm256_set1_epi32(x4);
          for (int h = 0; h < 2; ++h) {
            __m256i c;
            if constexpr (Q5) {
              c = x16q5_codes(u, sub, t, h);
            } else {
              const __m256i v = load32(u + 256 + (8 * j + t) * 64 + 32 * h);
              c = high ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m4) : _mm256_and_si256(v, m4);
            }
            p16[h] = _mm256_add_epi16(p16[h], _mm256_maddubs_epi16(c, bx));
          }
        }
        for (int h = 0; h < 2; ++h) i32[h] = _mm256_add_epi32(i32[h], _mm256_madd_epi16(p16[h], ones));
      }
      const __m256 xs = _mm256_set1_ps(a.x.s[i0 * nb32 + s]), so = _mm256_set1_ps(a.x.so32[i0 * nb32 + s]);
      for (int h = 0; h < 2; ++h) {
        sum_sc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes8(sc8[sub] + 8 * h)), _mm256_mul_ps(_mm256_cvtepi32_ps(i32[h]), xs), sum_sc[h]);
        sum_mn[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes8(mn8[sub] + 8 * h)), so, sum_mn[h]);
      }
    }
    for (int h = 0; h < 2; ++h) acc[h] = _mm256_fnmadd_ps(dmin[h], sum_mn[h], _mm256_fmadd_ps(d[h], sum_sc[h], acc[h]));
  }
  for (int h = 0; h < 2; ++h) _mm256_storeu_ps(a.y + i0 * a.ldy + g * kX16Rows + h * 8, acc[h]);
}

// Q4_K repacked 16 rows at a time (x16, quants.h), m = 2 .. 8 activation rows (one:
// x16k_row), one half of the group per pass as x16_rows: per super-block the
// rows' d, dmin and 6-bit sub-block scales / mins decoded at once; per sub-block 8
// vpmaddubsw (int16 sums: 8 x 2 x 15 x 127 = 30480 fits), one vpmaddwd, cvt and
// fma, and the min times the activation sub-block's sum (so32).
template <int MR>
void x16k_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nsb = k / 256, nb32 = k / 32;
  const uint8_t* base = a.w->data + g * nsb * (kX16Rows * 144);
  const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  if constexpr (MR == 1) {  // decode: both halves in one pass (one stream, each broadcast used twice)
    x16k_row<false>(a, i0, g);
    return;
  }
  for (int h = 0; h < 2; ++h) {
    __m256 acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; ++sb) {
      const uint8_t* u = base + sb * (kX16Rows * 144);
      if (h == 0)  // the first pass streams the group from memory (the second finds it in cache)
        x16_prefetch_unit(u);
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h)));
      const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 32 + 16 * h)));
      alignas(16) uint8_t sc8[8][16], mn8[8][16];
      x16k_scale_min_bytes(u, sc8, mn8);
      for (int sub = 0; sub < 8; ++sub) {
        const __m256 dsc = _mm256_mul_ps(d, _mm256_cvtepi32_ps(lanes8(sc8[sub] + 8 * h)));
        const __m256 dmn = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(lanes8(mn8[sub] + 8 * h)));
        const int j = sub / 2, high = sub % 2;
        for (int i = 0; i < MR; ++i) {
          const int8_t* xb = a.x.q + (i0 + i) * k + sb * 256 + 32 * sub;
          __m256i p16 = _mm256_setzero_si256();
          for (int t = 0; t < 8; ++t) {
            const __m256i v = load32(u + 256 + (8 * j + t) * 64 + 32 * h);
            const __m256i c = high ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m4) : _mm256_and_si256(v, m4);
            int32_t x4;
            std::memcpy(&x4, xb + 4 * t, 4);
            p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(c, _mm256_set1_epi32(x4)));
          }
          const int64_t s = sb * 8 + sub;
          const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
          const float xs = a.x.s[(i0 + i) * nb32 + s], so = a.x.so32[(i0 + i) * nb32 + s];
          acc[i] = _mm256_fmadd_ps(dsc, _mm256_mul_ps(p, _mm256_set1_ps(xs)), acc[i]);
          acc[i] = _mm256_fnmadd_ps(dmn, _mm256_set1_ps(so), acc[i]);
        }
      }
    }
    for (int i = 0; i < MR; ++i) _mm256_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows + h * 8, acc[i]);
  }
}

// Q6_K repacked 16 rows at a time (x16, quants.h), one activation row, one half of
// the group (8 rows, lane r = row 8h + r) per pass. Slot t of half n's three
// planes gives the codes (u8 <= 63) of its four quarters: q(p) = plane & 63, and
// q(3) gathered from the planes' top bits (8 ops for 32 codes, against 4-5 per
// 32 codes from ql / qh as stored). Each quarter's codes by vpmaddubsw with its
// broadcast activations, two slots' int16 pairs added (2 x 2 x 63 x 127 < 2^15),
// vpmaddwd by the 8 rows' sub-block scales (int16 pairs, built once per
// super-block and half), and per activation block of 32 one cvt + fma by d x its
// scale. The codes' -32 comes back as -32 d sum_sub sc x the activation sums per
// 16 (so).
void x16q6_row(const BlockGemvArgs& a, int64_t i, int64_t g) {
  const int64_t k = a.w->k, nsb = k / 256;
  const uint8_t* base = a.w->data + g * nsb * (kX16Rows * 210), *wend = a.w->data + a.w->bytes();
  const int8_t* xq = a.x.q + i * k;
  const float* xs = a.x.s + i * (k / 32);
  const float* so = a.x.so + i * (k / 16);
  const __m256i m63 = _mm256_set1_epi8(0x3f), top = _mm256_set1_epi8(char(0xc0));
  const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  constexpr int64_t kPlane = 8 * 64;  // bytes between a slot's planes
  __m256 accs[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, offs[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* u = base + sb * (kX16Rows * 210);
    // the next super-block's 53 lines (the next group's first, after the last) are
    // asked for two a slot through this one: a burst of 53 at once stalls on the
    // miss queue, a super-block left to the hardware arrives late (Zen 1, 4096 x
    // 4096 from DRAM, 2 threads: 1399 us with a burst for the current one, 967 so)
    const uint8_t* next = u + kX16Rows * 210;
    for (int h = 0; h < 2; ++h) {  // the second half finds the super-block in L1
      __m256 acc = accs[h], off = offs[h];
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h)));
      const uint8_t* scp = u + kX16Q6Sc + 8 * h;  // sub-block p's 8 scales at scp + 16p
      __m256i scw[16];                            // ... as int16 pairs (one per row: vpmaddwd)
      __m256 ot = _mm256_setzero_ps();
      for (int p = 0; p < 16; ++p) {
        const __m128i s8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scp + 16 * p));
        scw[p] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, dup));
        ot = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s8)), _mm256_set1_ps(so[sb * 16 + p]), ot);
      }
      off = _mm256_fmadd_ps(d, ot, off);
      for (int n = 0; n < 2; ++n) {
        const uint8_t* planes = u + kX16Q6Codes + n * 3 * kPlane + 32 * h;
        const int8_t* xn = xq + sb * 256 + n * 128;  // quarter s's activations at xn + 32 s
        __m256i i32[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 4
        for (int pair = 0; pair < 4; ++pair) {  // slots 2 pair, 2 pair + 1: sub-block 8n + 2s + pair / 2
          __m256i p16[4];
#pragma GCC unroll 2
          for (int tt = 0; tt < 2; ++tt) {
            const int t = 2 * pair + tt;
            prefetch_lines(next, 2 * (((h * 2 + n) * 4 + pair) * 2 + tt), 2, 53, wend);
            const __m256i b0 = load32(planes + t * 64), b1 = load32(planes + kPlane + t * 64), b2 = load32(planes + 2 * kPlane + t * 64);
            // q(3): bits 0-1 from b0's top, 2-3 from b1's, 4-5 from b2's (16-bit
            // shifts of masked bytes move nothing across bytes)
            __m256i q3 = _mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(b0, top), 2), _mm256_and_si256(b1, top));
            q3 = _mm256_or_si256(_mm256_srli_epi16(q3, 2), _mm256_and_si256(b2, top));
            q3 = _mm256_srli_epi16(q3, 2);
            const __m256i c[4] = {_mm256_and_si256(b0, m63), _mm256_and_si256(b1, m63), _mm256_and_si256(b2, m63), q3};
#pragma GCC unroll 4
            for (int s = 0; s < 4; ++s) {
              int32_t x4;
              std::memcpy(&x4, xn + 32 * s + 4 * t, 4);
              const __m256i prod = _mm256_maddubs_epi16(c[s], _mm256_set1_epi32(x4));
              p16[s] = tt ? _mm256_add_epi16(p16[s], prod) : prod;
            }
          }
#pragma GCC unroll 4
          for (int s = 0; s < 4; ++s) i32[s] = _mm256_add_epi32(i32[s], _mm256_madd_epi16(p16[s], scw[8 * n + 2 * s + pair / 2]));
        }
#pragma GCC unroll 4
        for (int s = 0; s < 4; ++s)
          acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32[s]), _mm256_mul_ps(d, _mm256_set1_ps(xs[sb * 8 + 4 * n + s])), acc);
      }
      accs[h] = acc;
      offs[h] = off;
    }
  }
  for (int h = 0; h < 2; ++h) _mm256_storeu_ps(a.y + i * a.ldy + g * kX16Rows + h * 8, _mm256_fnmadd_ps(offs[h], _mm256_set1_ps(32.f), accs[h]));
}

// Q8_0 repacked 16 rows at a time (x16, quants.h), one activation row, both
// halves of the group per block: per slot |codes| of 8 rows by vpmaddubsw with
// the broadcast activations signed by the codes (exact for a -128 code, as
// TQ8_0), vpmaddwd into int32, one cvt + fma per block by d x its activation
// scale. The next block (the next group's first after the last) is fetched
// 9 lines per block.
void x16q8_row(const BlockGemvArgs& a, int64_t i, int64_t g) {
  const int64_t k = a.w->k, nb = k / 32;
  const uint8_t* base = a.w->data + g * nb * (kX16Rows * 34), *wend = a.w->data + a.w->bytes();
  const int8_t* xq = a.x.q + i * k;
  const float* xs = a.x.s + i * nb;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* u = base + b * (kX16Rows * 34);
    const uint8_t* next = u + 2 * kX16Rows * 34;  // two blocks ahead (1 or 4: within noise)
    prefetch_lines(next, 0, 9, 9, wend);
    __m256i i32[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
    for (int t = 0; t < 8; ++t) {
      int32_t x4;
      std::memcpy(&x4, xq + b * 32 + 4 * t, 4);
      const __m256i bx = _mm256_set1_epi32(x4);
      for (int h = 0; h < 2; ++h) {
        const __m256i v = load32(u + 2 * kX16Rows + t * 64 + 32 * h);
        i32[h] = _mm256_add_epi32(i32[h], _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(bx, v)), ones));
      }
    }
    const __m256 s = _mm256_set1_ps(xs[b]);
    for (int h = 0; h < 2; ++h) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h)));
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32[h]), _mm256_mul_ps(d, s), acc[h]);
    }
  }
  for (int h = 0; h < 2; ++h) _mm256_storeu_ps(a.y + i * a.ldy + g * kX16Rows + h * 8, acc[h]);
}

// Every weight row against the activation rows (each_row), with the
// super-block kernel (K types) or the 32-value one.
template <class T, bool K>
void gemv(const BlockGemvArgs& a, int64_t j0, int64_t j1) {
  each_row(a, j0, j1, [&](auto mr, int64_t i, int64_t j) {
    if constexpr (K) kquant_rows<T, decltype(mr)::value>(a, i, j);
    else fused_rows<T, decltype(mr)::value>(a, i, j);
  });
}

// The decoders with AVX2 bodies (nullptr where the reference decoder is used).
using BlockDecodeFn = void (*)(const uint8_t* src, int64_t blocks, DecodedRow out);
BlockDecodeFn block_decode_avx2(GgmlType type) {
  switch (type) {
    case GgmlType::q4_0: return dec_q4_0;
    case GgmlType::q4_1: return dec_q4_1;
    case GgmlType::q5_0: return dec_q5_0;
    case GgmlType::q5_1: return dec_q5_1;
    case GgmlType::q8_0: return dec_q8_0;
    case GgmlType::q2_k: return dec_q2_k;
    case GgmlType::q3_k: return dec_q3_k;
    case GgmlType::q4_k: return dec_qk45<false>;
    case GgmlType::q5_k: return dec_qk45<true>;
    case GgmlType::q6_k: return dec_q6_k;
    case GgmlType::iq4_nl: return dec_iq4_nl;
    case GgmlType::iq4_xs: return dec_iq4_xs;
    default: return nullptr;
  }
}

}  // namespace

void block_gemv_avx2(const BlockGemvArgs& a, int64_t j0, int64_t j1) {
  const GgmlType type = a.w->fmt->type;
  if (a.w->x16 && (type == GgmlType::q5_k || type == GgmlType::q6_k || type == GgmlType::q8_0)) {
    // whole groups of 16 rows, an activation row at a time
    const auto row = type == GgmlType::q5_k ? x16k_row<true> : type == GgmlType::q6_k ? x16q6_row : x16q8_row;
    for (int64_t g = j0 / kX16Rows; g < j1 / kX16Rows; ++g)
      for (int64_t i = 0; i < a.x.m; ++i) row(a, i, g);
    return;
  }
  if (a.w->x16 && a.w->fmt->type == GgmlType::q4_k)  // whole groups of 16 rows
    return each_row(a, j0 / kX16Rows, j1 / kX16Rows, [&](auto mr, int64_t i, int64_t g) { x16k_rows<decltype(mr)::value>(a, i, g); });
  if (a.w->x16)  // Q4_0, whole groups of 16 rows
    return each_row(a, j0 / kX16Rows, j1 / kX16Rows, [&](auto mr, int64_t i, int64_t g) { x16_rows<decltype(mr)::value>(a, i, g); });
  switch (a.w->fmt->type) {
    case GgmlType::q4_0: return gemv<TQ4_0, false>(a, j0, j1);
    case GgmlType::q4_1: return gemv<TQ4_1, false>(a, j0, j1);
    case GgmlType::q5_0: return gemv<TQ5_0, false>(a, j0, j1);
    case GgmlType::q5_1: return gemv<TQ5_1, false>(a, j0, j1);
    case GgmlType::q8_0: return gemv<TQ8_0, false>(a, j0, j1);
    case GgmlType::q2_k: return gemv<TQ2_K, true>(a, j0, j1);
    case GgmlType::q3_k: return gemv<TQ3_K, true>(a, j0, j1);
    case GgmlType::q4_k: return gemv<TQK45<false>, true>(a, j0, j1);
    case GgmlType::q5_k: return gemv<TQK45<true>, true>(a, j0, j1);
    case GgmlType::q6_k: return gemv<TQ6_K, true>(a, j0, j1);
    case GgmlType::iq4_nl: return gemv<TIQ4_NL, false>(a, j0, j1);
    case GgmlType::iq4_xs: return gemv<TIQ4_XS, true>(a, j0, j1);
    default: return block_gemv_ref(a, j0, j1);
  }
}

bool x16_pack_avx2(GgmlType type, const uint8_t* group, int64_t k, int64_t k_pad, int8_t* blk, int32_t* colsum, float* scales,
                   float* offsets) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8), ones8 = _mm256_set1_epi8(1),
                ones16 = _mm256_set1_epi16(1);
  // per 4-byte lane (= row) of a vector of byte sums
  auto row_sums = [&](__m256i v) { return _mm256_madd_epi16(_mm256_maddubs_epi16(v, ones8), ones16); };
  std::memset(blk + k * kX16Rows, 0, size_t((k_pad - k) * kX16Rows));
  if (type == GgmlType::q4_0) {
    const __m256i bias = _mm256_set1_epi32(256);  // 32 values x 8
    x16_q4_0_blocks(group, k / 32, false, [&](int64_t b, const uint8_t* sc, const uint8_t* codes) {
      for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7: one 32-byte half of each quarter
        _mm256_storeu_ps(scales + b * kX16Rows + 8 * h,
                         _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + 16 * h))));
        __m256i sum = _mm256_setzero_si256();  // codes summed per byte: 8 x 15 fits
        for (int q = 0; q < 4; ++q) {
          const __m256i v = load32(codes + q * 64 + 32 * h);
          const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
          sum = _mm256_add_epi8(sum, _mm256_add_epi8(lo, hi));
          store32(blk + (b * 8 + q) * 64 + 32 * h, _mm256_sub_epi8(lo, eight));
          store32(blk + (b * 8 + 4 + q) * 64 + 32 * h, _mm256_sub_epi8(hi, eight));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + b * kX16Rows + 8 * h), _mm256_sub_epi32(row_sums(sum), bias));
      }
    });
    return false;
  }
  // per 4-byte lane (= row) of a vector of signed bytes, the sum
  auto row_sums_s = [&](__m256i v) { return _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16); };
  auto put_sums = [&](int64_t g, int h, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + g * kX16Rows + 8 * h), v); };
  if (type == GgmlType::q8_0) {  // the codes are the layout's steps already
    const __m256i m128 = _mm256_set1_epi8(char(0x80));
    __m256i seen = _mm256_setzero_si256();
    for (int64_t b = 0; b < k / 32; ++b) {
      const uint8_t* u = group + b * kX16Rows * 34;
      for (int h = 0; h < 2; ++h) {
        _mm256_storeu_ps(scales + b * kX16Rows + 8 * h, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h))));
        __m256i sum = _mm256_setzero_si256();
        for (int t = 0; t < 8; ++t) {
          const __m256i v = load32(u + 2 * kX16Rows + t * 64 + 32 * h);
          seen = _mm256_or_si256(seen, _mm256_cmpeq_epi8(v, m128));
          sum = _mm256_add_epi32(sum, row_sums_s(v));
          store32(blk + (b * 8 + t) * 64 + 32 * h, v);
        }
        put_sums(b, h, sum);
      }
    }
    return !_mm256_testz_si256(seen, seen);
  }
  if (type == GgmlType::q6_k) {  // groups of 16: sub-block 8n + 2p + t / 4 of each super-block
    const __m256i m63 = _mm256_set1_epi8(0x3f), top = _mm256_set1_epi8(char(0xc0)), m32 = _mm256_set1_epi8(32);
    constexpr int64_t kPlane = 8 * 64;
    for (int64_t sb = 0; sb < k / 256; ++sb) {
      const uint8_t* u = group + sb * kX16Rows * 210;
      for (int h = 0; h < 2; ++h) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h)));
        for (int s = 0; s < 16; ++s)
          _mm256_storeu_ps(scales + (sb * 16 + s) * kX16Rows + 8 * h,
                           _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(u + kX16Q6Sc + 16 * s + 8 * h))))));
        for (int n = 0; n < 2; ++n)
          for (int th = 0; th < 2; ++th) {
            __m256i sum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
            for (int t = 4 * th; t < 4 * th + 4; ++t) {
              const uint8_t* planes = u + kX16Q6Codes + n * 3 * kPlane + t * 64 + 32 * h;
              const __m256i b0 = load32(planes), b1 = load32(planes + kPlane), b2 = load32(planes + 2 * kPlane);
              // q(3): bits 0-1 from b0's top, 2-3 from b1's, 4-5 from b2's (x16q6_row)
              __m256i q3 = _mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(b0, top), 2), _mm256_and_si256(b1, top));
              q3 = _mm256_or_si256(_mm256_srli_epi16(q3, 2), _mm256_and_si256(b2, top));
              q3 = _mm256_srli_epi16(q3, 2);
              const __m256i c[4] = {_mm256_and_si256(b0, m63), _mm256_and_si256(b1, m63), _mm256_and_si256(b2, m63), q3};
              for (int p = 0; p < 4; ++p) {
                const __m256i v = _mm256_sub_epi8(c[p], m32);
                sum[p] = _mm256_add_epi32(sum[p], row_sums_s(v));
                store32(blk + (sb * 64 + 32 * n + 8 * p + t) * 64 + 32 * h, v);
              }
            }
            for (int p = 0; p < 4; ++p) put_sums(sb * 16 + 8 * n + 2 * p + th, h, sum[p]);
          }
      }
    }
    return false;
  }
  // Q4_K and Q5_K (the same header), per super-block: scales and offsets row by
  // row, codes 8 rows per vector
  const int64_t sb_bytes = kX16Rows * (type == GgmlType::q5_k ? 176 : 144);
  for (int64_t sb = 0; sb < k / 256; ++sb) {
    const uint8_t* u = group + sb * sb_bytes;
    // the 6-bit scales and mins of the 16 rows (x16k_scale_min_bytes), times d /
    // dmin: the reference's products
    const __m256 neg = _mm256_set1_ps(-0.f);
    alignas(16) uint8_t sc8[8][16], mn8[8][16];
    x16k_scale_min_bytes(u, sc8, mn8);
    for (int h = 0; h < 2; ++h) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 16 * h)));
      const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 32 + 16 * h)));
      for (int sub = 0; sub < 8; ++sub) {
        const int64_t at = (sb * 8 + sub) * kX16Rows + 8 * h;
        _mm256_storeu_ps(scales + at, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lanes8(sc8[sub] + 8 * h))));
        _mm256_storeu_ps(offsets + at, _mm256_xor_ps(_mm256_mul_ps(dmin, _mm256_cvtepi32_ps(lanes8(mn8[sub] + 8 * h))), neg));
      }
    }
    if (type == GgmlType::q5_k) {
      for (int sub = 0; sub < 8; ++sub)
        for (int h = 0; h < 2; ++h) {
          __m256i sum = _mm256_setzero_si256();  // codes summed per byte: 8 x 31 fits
          for (int t = 0; t < 8; ++t) {
            const __m256i c = x16q5_codes(u, sub, t, h);
            sum = _mm256_add_epi8(sum, c);
            store32(blk + (sb * 64 + 8 * sub + t) * 64 + 32 * h, c);
          }
          put_sums(sb * 8 + sub, h, row_sums(sum));
        }
      continue;
    }
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h) {
        __m256i slo = _mm256_setzero_si256(), shi = slo;
        for (int t = 0; t < 8; ++t) {
          const __m256i v = load32(u + 256 + (8 * j + t) * 64 + 32 * h);
          const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
          slo = _mm256_add_epi8(slo, lo);
          shi = _mm256_add_epi8(shi, hi);
          store32(blk + (sb * 64 + 16 * j + t) * 64 + 32 * h, lo);
          store32(blk + (sb * 64 + 16 * j + 8 + t) * 64 + 32 * h, hi);
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + (sb * 8 + 2 * j) * kX16Rows + 8 * h), row_sums(slo));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + (sb * 8 + 2 * j + 1) * kX16Rows + 8 * h), row_sums(shi));
      }
  }
  return false;
}

void block_decode_row_avx2(const BlockFormat& f, const uint8_t* row, int64_t k, DecodedRow out) {
  const BlockDecodeFn fn = block_decode_avx2(f.type);
  (fn ? fn : f.decode)(row, k / f.block, out);
}

void block_quant_avx2(const float* x, int64_t m, int64_t k, int64_t act, const BlockActsOut& o) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t b = 0; b < k / act; ++b) {
      const float* xb = x + i * k + act * b;
      __m256 mx = _mm256_setzero_ps();
      for (int64_t t = 0; t < act; t += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + t)));
      const float amax = hmax(mx);
      if (!(amax > 0.f) || !(amax <= 3.4e38f)) {  // zero, NaN or inf: the reference's handling
        const BlockActsOut ob{o.q + i * k + act * b, o.s + i * (k / act) + b, o.so + i * (k / 16) + act / 16 * b,
                              o.so32 + i * (k / 32) + act / 32 * b};
        block_quant_ref(xb, 1, act, act, ob);
        continue;
      }
      const float d = amax / 127.f;
      const __m256 id = _mm256_set1_ps(127.f / amax);
      o.s[i * (k / act) + b] = d;
      for (int64_t c = 0; c < act; c += 32) {
        __m256i r[4];
        for (int t = 0; t < 4; ++t) {
          // round to nearest even, as the reference (|x * 127 / amax| <= 127 up to rounding)
          const __m256 p = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + c + 8 * t), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          r[t] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(p, _mm256_set1_ps(127.f)), _mm256_set1_ps(-127.f)));
        }
        const __m256i p01 = _mm256_packs_epi32(r[0], r[1]), p23 = _mm256_packs_epi32(r[2], r[3]);
        const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.q + i * k + act * b + c), bytes);
        // the sums of each 16: lanes of r0 + r1 and of r2 + r3
        const __m256i s01 = _mm256_add_epi32(r[0], r[1]), s23 = _mm256_add_epi32(r[2], r[3]);
        __m256i h = _mm256_hadd_epi32(s01, s23);  // [a01 a23 b01 b23 | a45 a67 b45 b67]
        h = _mm256_hadd_epi32(h, h);              // [a0-3 b0-3 .. | a4-7 b4-7 ..]
        const __m128i t2 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        const int32_t s0 = _mm_cvtsi128_si32(t2), s1 = _mm_extract_epi32(t2, 1);
        const int64_t g = i * (k / 16) + (act * b + c) / 16;
        o.so[g] = d * float(s0);
        o.so[g + 1] = d * float(s1);
        o.so32[i * (k / 32) + (act * b + c) / 32] = d * float(s0 + s1);
      }
    }
}

}  // namespace sparq
