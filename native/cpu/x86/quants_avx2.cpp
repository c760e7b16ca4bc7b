// quants_avx2.cpp - the GGUF block formats on AVX2: per-type decoders to the
// shared int8 + scale / offset form (quants.h), the decode GEMV over decoded
// rows, the f32 expansion of prefill strips, and the per-32 activation
// quantizer.
//
// The GEMV decodes one weight row into L1 (k int8 + k / 16 scales and
// offsets) and multiplies it by every activation row: per 32 values one
// vpmaddubsw of |w| by sign(x, w) (pair sums up to 2 x 127 x 127 < 2^15) and one
// vpmaddwd give 8 int32 lanes, lanes 0-3 the first group of 16 and 4-7 the
// second, which are scaled by [s0 x4 | s1 x4] * x_scale into an f32 accumulator.
// Compiled with -ffp-contract=off: the f32 expansion must round scale * q and
// + offset separately, as ggml's dequantizer does.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "../quants.h"
#include "avx2_math.h"

namespace sparq {
namespace {

using avx2::hmax;
using avx2::hsum;

constexpr int8_t kIq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline void store32(int8_t* dst, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v); }
inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
// 16 bytes -> 32 values: low nibbles (values 0-15), then high nibbles (16-31)
inline __m256i nib32(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}
// bit j of v -> byte j = 0x10 when set, 0 otherwise
inline __m256i bits_x16(uint32_t v) {
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(int(v)),
                                             _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                                              3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}
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
  for (int64_t i = 0; i < blocks; ++i, s += 34) {
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

// Thread-local decode buffers (grown to the largest k seen).
struct RowBuf {
  std::vector<int8_t> q;
  std::vector<float> f;  // scale [k / 16], offset [k / 16]
  DecodedRow get(int64_t k) {
    if (int64_t(q.size()) < k) q.resize(size_t(k));
    if (int64_t(f.size()) < k / 8) f.resize(size_t(k / 8));
    return DecodedRow{q.data(), f.data(), f.data() + k / 16};
  }
};

inline void decode_row(const BlockWeight& w, int64_t j, DecodedRow r) {
  const BlockDecodeFn fn = block_decode_avx2(w.fmt->type);
  (fn ? fn : w.fmt->decode)(w.data + j * w.row_bytes, w.k / w.fmt->block, r);
}

template <int MR>
void gemv_rows(const BlockGemvArgs& a, int64_t i0, const DecodedRow& r, int64_t j) {
  const int64_t k = a.w->k, nb = k / 32;
  __m256 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i pair = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.q + 32 * b));
    const __m256i aw = _mm256_sign_epi8(w, w);
    const __m256 sc = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r.scale + 2 * b)))), pair);
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.x.q + (i0 + i) * k + 32 * b));
      const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w)), ones);
      const __m256 xs = _mm256_broadcast_ss(a.x.s + (i0 + i) * nb + b);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(sc, xs), acc[i]);
    }
  }
  if (a.w->fmt->offsets) {
    const int64_t groups = k / 16;
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) {
      const __m256 off = _mm256_loadu_ps(r.offset + g);
      for (int i = 0; i < MR; ++i) acc[i] = _mm256_fmadd_ps(off, _mm256_loadu_ps(a.x.so + (i0 + i) * groups + g), acc[i]);
    }
    float tail[MR] = {};
    for (; g < groups; ++g)
      for (int i = 0; i < MR; ++i) tail[i] += r.offset[g] * a.x.so[(i0 + i) * groups + g];
    for (int i = 0; i < MR; ++i) a.y[(i0 + i) * a.ldy + j] = hsum(acc[i]) + tail[i];
    return;
  }
  for (int i = 0; i < MR; ++i) a.y[(i0 + i) * a.ldy + j] = hsum(acc[i]);
}

thread_local RowBuf t_buf;

}  // namespace

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

void block_gemv_avx2(const BlockGemvArgs& a, int64_t j0, int64_t j1) {
  const BlockWeight& w = *a.w;
  const DecodedRow r = t_buf.get(w.k);
  for (int64_t j = j0; j < j1; ++j) {
    decode_row(w, j, r);
    int64_t i = 0;
    for (; i + 4 <= a.x.m; i += 4) gemv_rows<4>(a, i, r, j);
    for (; i + 2 <= a.x.m; i += 2) gemv_rows<2>(a, i, r, j);
    for (; i < a.x.m; ++i) gemv_rows<1>(a, i, r, j);
  }
}

void block_expand_avx2(const BlockFormat& f, const uint8_t* row, int64_t k, int8_t* q, float* sc, float* off, float* out) {
  const BlockDecodeFn fn = block_decode_avx2(f.type);
  const DecodedRow r{q, sc, off};
  (fn ? fn : f.decode)(row, k / f.block, r);
  for (int64_t g = 0; g < k / 16; ++g) {
    const __m256 s = _mm256_set1_ps(sc[g]);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * g));
    __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s);
    __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))), s);
    if (f.offsets) {
      const __m256 o = _mm256_set1_ps(off[g]);
      v0 = _mm256_add_ps(v0, o);
      v1 = _mm256_add_ps(v1, o);
    }
    _mm256_storeu_ps(out + 16 * g, v0);
    _mm256_storeu_ps(out + 16 * g + 8, v1);
  }
}

void block_quant_avx2(const float* x, int64_t m, int64_t k, int8_t* q, float* s, float* so) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t b = 0; b < k / 32; ++b) {
      const float* xb = x + i * k + 32 * b;
      __m256 v[4], mx = _mm256_setzero_ps();
      for (int t = 0; t < 4; ++t) {
        v[t] = _mm256_loadu_ps(xb + 8 * t);
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[t]));
      }
      const float amax = hmax(mx);
      if (!(amax > 0.f) || !(amax <= 3.4e38f)) {  // zero, NaN or inf: the reference's handling
        block_quant_ref(xb, 1, 32, q + i * k + 32 * b, s + i * (k / 32) + b, so + i * (k / 16) + 2 * b);
        continue;
      }
      const __m256 id = _mm256_set1_ps(127.f / amax);
      __m256i r[4];
      for (int t = 0; t < 4; ++t) {
        // round to nearest even, as the reference (|x * 127 / amax| <= 127 up to rounding)
        const __m256 p = _mm256_round_ps(_mm256_mul_ps(v[t], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r[t] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(p, _mm256_set1_ps(127.f)), _mm256_set1_ps(-127.f)));
      }
      const __m256i p01 = _mm256_packs_epi32(r[0], r[1]), p23 = _mm256_packs_epi32(r[2], r[3]);
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * k + 32 * b), bytes);
      const __m256i s01 = _mm256_add_epi32(r[0], r[1]), s23 = _mm256_add_epi32(r[2], r[3]);
      const float d = amax / 127.f;
      s[i * (k / 32) + b] = d;
      int32_t l[8], h[8];
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(l), s01);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(h), s23);
      int32_t s0 = 0, s1 = 0;
      for (int t = 0; t < 8; ++t) {
        s0 += l[t];
        s1 += h[t];
      }
      so[i * (k / 16) + 2 * b] = d * float(s0);
      so[i * (k / 16) + 2 * b + 1] = d * float(s1);
    }
}

}  // namespace sparq
