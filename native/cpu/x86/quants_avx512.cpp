// quants_avx512.cpp - the decode GEMV of the GGUF block formats on AVX-512 VNNI:
// 64 weights per instruction where the AVX2 kernel (quants_avx2.cpp) does 32.
//
// Each 64 codes meet the int8 activations in one vpdpbusd (unsigned codes as
// they are; signed ones as |w| by x with w's sign); its 16 int32 lanes (each a
// sum of 4 products, exact) are converted and multiplied, lane by lane, by the
// f32 factor of their group: weight scale x integer sub-block scale x the
// scale of the activation block they lie in. Those factors are made once per
// super-block (K types: 16 groups of 16 = one register) or per 8 blocks (the
// 32-value types), and picked per chunk by one vpermps. Offsets (mins, the
// bias of unsigned codes) meet the activation sums per 16 / 32 once per
// super-block / 8 blocks.
// GCC 12 flags the _mm512_undefined_* inside its own inserti64x4 / permutexvar /
// cvtepi32_ps / reduce_add_ps wrappers (false positives of the header)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "../quants.h"
#include "quants_x86.h"



namespace sparq {


namespace {

inline __m512i cat(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

// 64 codes ready for vpdpbusd: unsigned ones as they are; signed ones as |w|,
// with the mask of the negative ones, by which the activations change sign.
template <bool kSigned>
struct Codes64 {
  __m512i u;
  __mmask64 neg = 0;
  explicit Codes64(__m512i w) : u(kSigned ? _mm512_abs_epi8(w) : w) {
    if (kSigned) neg = _mm512_movepi8_mask(w);
  }
  // acc + (the 16 int32 sums of 4 products with x) x fac[pick[lane]]
  __m512 fma(__m512i x, __m512i pick, __m512 fac, __m512 acc) const {
    if (kSigned) x = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
    const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(pick, fac), acc);
  }
};
inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

// lane l of chunk c (64 values = groups 4c .. 4c + 3 of 16) -> group 4c + l / 4
alignas(64) constexpr int32_t kGroupOf[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                                 {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                                 {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                                 {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};
// group g of 16 -> its activation block of 32, g / 2
alignas(64) constexpr int32_t kHalf[16] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};
// lane l of block pair p (64 values = blocks 2p, 2p + 1) -> block 2p + l / 8
alignas(64) constexpr int32_t kBlockOf[4][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                                 {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
                                                 {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
                                                 {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7}};

// --- the K types: codes(b, f) calls f(c, u) with the codes u of values 64c .. 64c + 63
// (unsigned, or signed when kSigned)
struct ZQK4 {
  static constexpr int kBytes = 144;
  static constexpr bool kOff = true, kSigned = false;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_qk45(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load32(b + 16 + 32 * c);  // low nibbles: values 64c + 0..31, high: 64c + 32..63
      f(c, _mm512_and_si512(cat(v, _mm256_srli_epi16(v, 4)), lo4));
    }
  }
};
struct ZQK5 {
  static constexpr bool kSigned = false;
  static constexpr int kBytes = 176;
  static constexpr bool kOff = true;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_qk45(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m512i lo4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    const __m256i hb = load32(b + 16);  // bit 2c of byte l: value 64c + l; bit 2c + 1: 64c + 32 + l
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load32(b + 48 + 32 * c);
      const __m512i h = _mm512_and_si512(cat(_mm256_srli_epi16(hb, 2 * c), _mm256_srli_epi16(hb, 2 * c + 1)), one);
      f(c, _mm512_or_si512(_mm512_and_si512(cat(v, _mm256_srli_epi16(v, 4)), lo4), _mm512_slli_epi16(h, 4)));
    }
  }
};
struct ZQ6_K {
  static constexpr bool kSigned = false;
  static constexpr int kBytes = 210;
  static constexpr bool kOff = true;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_q6_k(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m512i lo4 = _mm512_set1_epi8(0x0f), three = _mm512_set1_epi8(3);
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      // ql[64n .. 64n + 63]: low nibbles are values 128n + 0..63, high ones 128n + 64..127;
      // qh[32n + l] bits 2t, 2t + 1: the high pair of value 128n + 32t + l
      const __m512i l = _mm512_loadu_si512(b + 64 * n);
      const __m256i hv = load32(b + 128 + 32 * n);
      const __m512i h = cat(hv, _mm256_srli_epi16(hv, 2));
      f(2 * n, _mm512_or_si512(_mm512_and_si512(l, lo4), _mm512_slli_epi16(_mm512_and_si512(h, three), 4)));
      f(2 * n + 1, _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), lo4),
                                   _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 4), three), 4)));
    }
  }
};
struct ZQ2_K {
  static constexpr bool kSigned = false;
  static constexpr int kBytes = 84;
  static constexpr bool kOff = true;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_q2_k(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m512i three = _mm512_set1_epi8(3);
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      const __m256i v = load32(b + 16 + 32 * n);  // bits 2t: value 128n + 32t + l
      f(2 * n, _mm512_and_si512(cat(v, _mm256_srli_epi16(v, 2)), three));
      f(2 * n + 1, _mm512_and_si512(cat(_mm256_srli_epi16(v, 4), _mm256_srli_epi16(v, 6)), three));
    }
  }
};
struct ZQ3_K {
  static constexpr bool kSigned = false;
  static constexpr int kBytes = 110;
  static constexpr bool kOff = true;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_q3_k(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m512i three = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
    const __m256i hm = load32(b);  // bit 4n + t of byte l: the high bit of value 128n + 32t + l
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      const __m256i v = load32(b + 32 + 32 * n);
      for (int h = 0; h < 2; ++h) {
        const __m512i lo = _mm512_and_si512(cat(_mm256_srli_epi16(v, 4 * h), _mm256_srli_epi16(v, 4 * h + 2)), three);
        const __m512i hi = _mm512_and_si512(cat(_mm256_srli_epi16(hm, 4 * n + 2 * h), _mm256_srli_epi16(hm, 4 * n + 2 * h + 1)), one);
        f(2 * n + h, _mm512_or_si512(lo, _mm512_slli_epi16(hi, 2)));
      }
    }
  }
};

struct ZIQ4_XS {
  static constexpr int kBytes = 136;
  static constexpr bool kOff = false, kSigned = true;
  [[gnu::always_inline]] static void prep(const uint8_t* b, KScales* k) { prep_iq4_xs(b, k); }
  template <class F> static void codes(const uint8_t* b, F&& f) {
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4)));
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c)
      f(c, cat(_mm256_shuffle_epi8(tab, nib32(b + 8 + 32 * c)), _mm256_shuffle_epi8(tab, nib32(b + 24 + 32 * c))));
  }
};

// K rows: per super-block the factor of each group g, F[g] = d * sc[g] * (scale of
// its activation block), in one register per activation row; per chunk of 64 one
// vpdpbusd, one cvt, one vpermps (the chunk's 4 groups) and one fma.
template <class T, int MR>
void krows(const BlockGemvArgs& a, int64_t i0, int64_t j) {
  const int64_t k = a.w->k, nsb = k / 256, g16 = k / 16;
  const uint8_t* row = a.w->data + j * a.w->row_bytes;
  const __m512i half = _mm512_load_si512(kHalf);
  const int8_t* xq[MR];
  const float* xs[MR];
  const float* so[MR];
  // two accumulator chains per row (fma latency), one when 8 rows fill the
  // registers; the offsets go into the last chain
  constexpr int kChains = MR >= 8 ? 1 : 2;
  __m512 acc[kChains][MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    xq[i] = a.x.q + (i0 + i) * k;
    xs[i] = a.x.s + (i0 + i) * (k / 32);
    so[i] = a.x.so + (i0 + i) * g16;
    for (int c = 0; c < kChains; ++c) acc[c][i] = _mm512_setzero_ps();
  }
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* b = row + sb * T::kBytes;
    if (MR == 1)  // the stream kX16Prefetch bytes ahead (the next rows' after the row's end)
      for (int q = 0; q < (T::kBytes + 63) / 64; ++q) prefetch_t0(b + kX16Prefetch + 64 * q);
    KScales ks;
    T::prep(b, &ks);
    const __m512 scf = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(ks.sc16)), _mm512_set1_ps(ks.d));
    __m512 fac[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      fac[i] = _mm512_mul_ps(scf, _mm512_permutexvar_ps(half, _mm512_castps256_ps512(_mm256_loadu_ps(xs[i] + 8 * sb))));
    if (T::kOff) {  // sum_g mo16[g] * (x scale * int sum of the group), dO applied per super-block
      const __m512 mo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(ks.mo16)), _mm512_set1_ps(ks.dO));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[kChains - 1][i] = _mm512_fmadd_ps(mo, _mm512_loadu_ps(so[i] + 16 * sb), acc[kChains - 1][i]);
    }
    T::codes(b, [&](int c, __m512i w) {
      const __m512i pick = _mm512_load_si512(kGroupOf[c]);
      const Codes64<T::kSigned> cw(w);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
        acc[c % kChains][i] = cw.fma(_mm512_loadu_si512(xq[i] + sb * 256 + 64 * c), pick, fac[i], acc[c % kChains][i]);
    });
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) a.y[(i0 + i) * a.ldy + j] = hsum512(kChains == 2 ? _mm512_add_ps(acc[0][i], acc[kChains - 1][i]) : acc[0][i]);
}

// --- the 32-value types: code(b) gives a block's 32 codes (unsigned, or signed
// when kSigned); its f16 scale is its first field; its offset per weight is kMinMul * scale
// (Q4_0, Q5_0), or the f16 min at kMin (Q4_1, Q5_1), or none.
struct ZQ4_0 {
  static constexpr int kBytes = 18, kMin = -1, kNib = 2;
  static constexpr float kMinMul = -8.f;
  static constexpr bool kSigned = false;
  static __m256i code(const uint8_t* b) { return nib32(b + 2); }
};
struct ZQ4_1 {
  static constexpr int kBytes = 20, kMin = 2, kNib = 4;
  static constexpr float kMinMul = 0.f;
  static constexpr bool kSigned = false;
  static __m256i code(const uint8_t* b) { return nib32(b + 4); }
};
struct ZQ5_0 {
  static constexpr int kBytes = 22, kMin = -1, kNib = -1;
  static constexpr float kMinMul = -16.f;
  static constexpr bool kSigned = false;
  static __m256i code(const uint8_t* b) {
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    return _mm256_or_si256(nib32(b + 6), bits_x16(qh));
  }
};
struct ZQ5_1 {
  static constexpr int kBytes = 24, kMin = 2, kNib = -1;
  static constexpr float kMinMul = 0.f;
  static constexpr bool kSigned = false;
  static __m256i code(const uint8_t* b) {
    uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    return _mm256_or_si256(nib32(b + 8), bits_x16(qh));
  }
};
struct ZQ8_0 {
  static constexpr int kBytes = kQ8_0Bytes, kMin = -1, kNib = -1;
  static constexpr float kMinMul = 0.f;
  static constexpr bool kSigned = true;
  static __m256i code(const uint8_t* b) { return load32(b + 2); }
};
struct ZIQ4_NL {
  static constexpr int kBytes = 18, kMin = -1, kNib = -1;
  static constexpr float kMinMul = 0.f;
  static constexpr bool kSigned = true;
  static __m256i code(const uint8_t* b) {
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4)));
    return _mm256_shuffle_epi8(tab, nib32(b + 2));
  }
};

// The 64 codes of blocks b and b + 1 (kBytes apart). 4-bit types (kNib: the byte
// where the 16 code bytes start): both blocks' bytes in one ymm, the nibbles
// split in one zmm (low 0, low 1, high 0, high 1 by 128-bit lane) and the lanes
// put in value order, 6 instructions where two nib32 and a cat take 11.
template <class T>
inline __m512i pair_codes(const uint8_t* b) {
  if constexpr (T::kNib >= 0) {
    const __m256i v = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + T::kNib))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + T::kBytes + T::kNib)), 1);
    const __m512i z = _mm512_and_si512(cat(v, _mm256_srli_epi16(v, 4)), _mm512_set1_epi8(0x0f));
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
  } else {
    return cat(T::code(b), T::code(b + T::kBytes));
  }
}

// The f16 at byte kAt of each of 8 blocks (kBytes apart; only the first cnt,
// the others 0), as f32. Scalar loads into one vector: a vpgatherdd here made
// the whole GEMV 1.5-2x slower on Zen 5.
template <int kBytes, int kAt>
inline __m256 f16x8(const uint8_t* blk, int cnt) {
  auto h = [&](int t) {
    uint16_t v = 0;
    if (t < cnt) std::memcpy(&v, blk + kAt + t * kBytes, 2);
    return short(v);
  };
  return _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)));
}

// 32-value rows, 8 blocks at a time: their 8 scales (and mins) converted at
// once and multiplied by the 8 activation scales of each row, then pairs of
// blocks (64 values) per vpdpbusd, fully unrolled. A last group
// of fewer than 8 blocks reads only its own (a last odd block with its upper
// half zero).
template <class T, int MR>
void lrows(const BlockGemvArgs& a, int64_t i0, int64_t j) {
  const int64_t k = a.w->k, nb = k / 32;
  constexpr bool kOff = T::kMin >= 0 || T::kMinMul != 0.f;
  const uint8_t* row = a.w->data + j * a.w->row_bytes;
  const int8_t* xq[MR];
  const float* xs[MR];
  const float* so32[MR];
  constexpr int kChains = MR >= 8 ? 1 : 2;  // as krows
  __m512 acc[kChains][MR];
  __m256 offv[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    xq[i] = a.x.q + (i0 + i) * k;
    xs[i] = a.x.s + (i0 + i) * nb;
    so32[i] = a.x.so32 + (i0 + i) * nb;
    for (int c = 0; c < kChains; ++c) acc[c][i] = _mm512_setzero_ps();
    offv[i] = _mm256_setzero_ps();
  }
  auto group = [&](int64_t b0, auto full) {
    constexpr bool kFull = decltype(full)::value;
    const int cnt = kFull ? 8 : int(nb - b0);
    const uint8_t* blk = row + b0 * T::kBytes;
    if (MR == 1)  // the stream kX16Prefetch bytes ahead (the next rows' after the row's end)
      for (int q = 0; q < (8 * T::kBytes + 63) / 64; ++q) prefetch_t0(blk + kX16Prefetch + 64 * q);
    const __m256 d8 = f16x8<T::kBytes, 0>(blk, cnt);
    __m256 o8 = _mm256_setzero_ps();
    if constexpr (T::kMin >= 0) o8 = f16x8<T::kBytes, (T::kMin >= 0 ? T::kMin : 0)>(blk, cnt);
    else if constexpr (kOff) o8 = _mm256_mul_ps(d8, _mm256_set1_ps(T::kMinMul));
    __m512 fac[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m256 x8, s8 = _mm256_setzero_ps();
      if (kFull) {
        x8 = _mm256_loadu_ps(xs[i] + b0);
        if (kOff) s8 = _mm256_loadu_ps(so32[i] + b0);
      } else {
        alignas(32) float xt[8] = {}, st[8] = {};
        std::memcpy(xt, xs[i] + b0, size_t(cnt) * 4);
        if (kOff) std::memcpy(st, so32[i] + b0, size_t(cnt) * 4);
        x8 = _mm256_load_ps(xt);
        s8 = _mm256_load_ps(st);
      }
      fac[i] = _mm512_castps256_ps512(_mm256_mul_ps(d8, x8));
      if (kOff) offv[i] = _mm256_fmadd_ps(o8, s8, offv[i]);
    }
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      const int t = 2 * p;
      if (!kFull && t >= cnt) break;
      const bool two = kFull || t + 1 < cnt;
      const __m512i w = two ? pair_codes<T>(blk + t * T::kBytes) : _mm512_zextsi256_si512(T::code(blk + t * T::kBytes));
      const __m512i pick = _mm512_load_si512(kBlockOf[p]);
      const Codes64<T::kSigned> cw(w);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const int8_t* xp = xq[i] + 32 * (b0 + t);
        const __m512i xv = two ? _mm512_loadu_si512(xp) : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp)));
        acc[p % kChains][i] = cw.fma(xv, pick, fac[i], acc[p % kChains][i]);
      }
    }
  };
  int64_t b0 = 0;
  for (; b0 + 8 <= nb; b0 += 8) group(b0, std::true_type{});
  if (b0 < nb) group(b0, std::false_type{});
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float y = hsum512(kChains == 2 ? _mm512_add_ps(acc[0][i], acc[kChains - 1][i]) : acc[0][i]);
    if (kOff) {
      alignas(32) float o[8];
      _mm256_store_ps(o, offv[i]);
      y += ((o[0] + o[1]) + (o[2] + o[3])) + ((o[4] + o[5]) + (o[6] + o[7]));
    }
    a.y[(i0 + i) * a.ldy + j] = y;
  }
}

// Q4_0 repacked 16 rows at a time (x16, quants.h): lane r of every vector is
// row 16g + r. Per block, the 16 rows' scales are one cvtph, and each quarter
// of its codes (64 bytes: 4 per row) is, by nibble, the operand of two
// vpdpbusd with 4 activation bytes broadcast: 8 vpdpbusd per 512 weights,
// where the row-at-a-time body needs 8 per 512 plus the unpacking, permutes and
// scalar scale loads of 8 rows. sum (code - 8) x = sum code x - 8 sum x: the
// second term from the activation block's sum (so32).
template <int MR>
void x16_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nb = k / 32;
  const uint8_t* group = a.w->data + g * nb * (kX16Rows * 18);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i m4h = _mm512_set1_epi8(char(0xf0));
  const int8_t* xq[MR];
  const float* xs[MR];
  const float* so32[MR];
  __m512 acc[MR], off[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    xq[i] = a.x.q + (i0 + i) * k;
    xs[i] = a.x.s + (i0 + i) * nb;
    so32[i] = a.x.so32 + (i0 + i) * nb;
    acc[i] = _mm512_setzero_ps();
    off[i] = _mm512_setzero_ps();
  }
  x16_q4_0_blocks(group, nb, true, [&](int64_t b, const uint8_t* scales, const uint8_t* codes) {
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
    const __m512 d8 = _mm512_mul_ps(d, _mm512_set1_ps(-8.f));
    // the high nibbles stay in place (16 x code): their chain's sum is exactly
    // divisible by 16
    __m512i lo[4], hi[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const __m512i v = _mm512_loadu_si512(codes + q * 64);
      lo[q] = _mm512_and_si512(v, m4);
      hi[q] = _mm512_and_si512(v, m4h);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const int8_t* xb = xq[i] + b * 32;
      __m512i p = _mm512_setzero_si512(), ph = p;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        int32_t x0, x1;
        std::memcpy(&x0, xb + 4 * q, 4);
        std::memcpy(&x1, xb + 16 + 4 * q, 4);
        p = _mm512_dpbusd_epi32(p, lo[q], _mm512_set1_epi32(x0));
        ph = _mm512_dpbusd_epi32(ph, hi[q], _mm512_set1_epi32(x1));
      }
      p = _mm512_add_epi32(p, _mm512_srai_epi32(ph, 4));
      acc[i] = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(xs[i][b])), acc[i]);
      off[i] = _mm512_fmadd_ps(d8, _mm512_set1_ps(so32[i][b]), off[i]);
    }
  });
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) _mm512_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows, _mm512_add_ps(acc[i], off[i]));
}

// The 6-bit scale and min of sub-block `sub` of the 16 rows of a Q4_K x16
// super-block u, from its byte planes (ggml's get_scale_min_k4 per lane).
[[gnu::always_inline]] inline void x16k_scale_min(const uint8_t* u, int sub, __m512i* sc, __m512i* mn) {
  const __m512i m6 = _mm512_set1_epi32(63), m4d = _mm512_set1_epi32(15);
  auto plane = [&](int p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + 64 + 16 * p))); };
  if (sub < 4) {
    *sc = _mm512_and_si512(plane(sub), m6);
    *mn = _mm512_and_si512(plane(sub + 4), m6);
  } else {
    const __m512i hi = plane(sub + 4);
    *sc = _mm512_or_si512(_mm512_and_si512(hi, m4d), _mm512_slli_epi32(_mm512_srli_epi32(plane(sub - 4), 6), 4));
    *mn = _mm512_or_si512(_mm512_srli_epi32(hi, 4), _mm512_slli_epi32(_mm512_srli_epi32(plane(sub), 6), 4));
  }
}

// Q4_K repacked 16 rows at a time (x16, quants.h): per super-block the 16
// rows' d and dmin are one cvtph each and their 6-bit sub-block scales and mins
// are decoded from the byte planes for all 16 rows at once (vpmovzxbd + shifts);
// each chunk of 64 values is 8 vectors of codes whose low / high nibbles are
// sub-blocks 2j / 2j + 1: 8 vpdpbusd each, one cvt and fma per sub-block,
// and the min times the activation sub-block's sum (so32).
template <int MR>
void x16k_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nsb = k / 256, nb32 = k / 32;
  const uint8_t* base = a.w->data + g * nsb * (kX16Rows * 144);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i m4h = _mm512_set1_epi8(char(0xf0));
  const int8_t* xq[MR];
  const float* xs[MR];
  const float* so32[MR];
  __m512 acc[MR][2], off[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    xq[i] = a.x.q + (i0 + i) * k;
    xs[i] = a.x.s + (i0 + i) * nb32;
    so32[i] = a.x.so32 + (i0 + i) * nb32;
    acc[i][0] = acc[i][1] = off[i] = _mm512_setzero_ps();
  }
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* u = base + sb * (kX16Rows * 144);
    x16_prefetch_unit(u);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32)));
    for (int j = 0; j < 4; ++j) {
      // scales and mins of sub-blocks 2j, 2j + 1, times d / dmin
      __m512 dsc[2], dmn[2];
      for (int h = 0; h < 2; ++h) {
        __m512i sc, mn;
        x16k_scale_min(u, 2 * j + h, &sc, &mn);
        dsc[h] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
        dmn[h] = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mn));
      }
      dsc[1] = _mm512_mul_ps(dsc[1], _mm512_set1_ps(1.f / 16));
      // the high nibbles stay in place (16 x code): their sums are scaled by 1 / 16
      // with the sub-block's factor, exactly
      __m512i lo[8], hi[8];
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t) {
        const __m512i v = _mm512_loadu_si512(u + 256 + (8 * j + t) * 64);
        lo[t] = _mm512_and_si512(v, m4);
        hi[t] = _mm512_and_si512(v, m4h);
      }
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        const int8_t* xb = xq[i] + sb * 256 + 64 * j;
        // two chains per nibble half (vpdpbusd latency)
        __m512i p0 = _mm512_setzero_si512(), p1 = p0, q0 = p0, q1 = p0;
#pragma GCC unroll 4
        for (int t = 0; t < 8; t += 2) {
          int32_t x0, x1, y0, y1;
          std::memcpy(&x0, xb + 4 * t, 4);
          std::memcpy(&x1, xb + 32 + 4 * t, 4);
          std::memcpy(&y0, xb + 4 * t + 4, 4);
          std::memcpy(&y1, xb + 36 + 4 * t, 4);
          p0 = _mm512_dpbusd_epi32(p0, lo[t], _mm512_set1_epi32(x0));
          p1 = _mm512_dpbusd_epi32(p1, hi[t], _mm512_set1_epi32(x1));
          q0 = _mm512_dpbusd_epi32(q0, lo[t + 1], _mm512_set1_epi32(y0));
          q1 = _mm512_dpbusd_epi32(q1, hi[t + 1], _mm512_set1_epi32(y1));
        }
        p0 = _mm512_add_epi32(p0, q0);
        p1 = _mm512_add_epi32(p1, q1);
        const int64_t s0 = sb * 8 + 2 * j;
        acc[i][0] = _mm512_fmadd_ps(dsc[0], _mm512_mul_ps(_mm512_cvtepi32_ps(p0), _mm512_set1_ps(xs[i][s0])), acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(dsc[1], _mm512_mul_ps(_mm512_cvtepi32_ps(p1), _mm512_set1_ps(xs[i][s0 + 1])), acc[i][1]);
        off[i] = _mm512_fmadd_ps(dmn[0], _mm512_set1_ps(so32[i][s0]), off[i]);
        off[i] = _mm512_fmadd_ps(dmn[1], _mm512_set1_ps(so32[i][s0 + 1]), off[i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
    _mm512_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows, _mm512_sub_ps(_mm512_add_ps(acc[i][0], acc[i][1]), off[i]));
}

// (a & mask) | b in one vpternlogd
inline __m512i and_or(__m512i a, __m512i mask, __m512i b) { return _mm512_ternarylogic_epi32(a, mask, b, 0xEA); }
// v >> shift (16-bit lanes) & mask (bytes): of a byte, the bits `mask` keeps after
// the shift (those a 16-bit shift brings over from its neighbour fall outside it)
template <int kShift>
inline __m512i bits(__m512i v, int mask) { return _mm512_and_si512(_mm512_srli_epi16(v, kShift), _mm512_set1_epi8(char(mask))); }
// 4 activation bytes at p in every lane
inline __m512i bcast4(const int8_t* p) {
  int32_t x4;
  std::memcpy(&x4, p, 4);
  return _mm512_set1_epi32(x4);
}

// The codes (u8 <= 31) of sub-block sub, slot t (16 rows x 4 values) of a Q5_K x16
// super-block u: plane sub's low 5 bits for sub < 5, else gathered from 2-3
// planes' top 3 bits (quants.h)
[[gnu::always_inline]] inline __m512i q5_codes(const uint8_t* u, int sub, int t) {
  const auto P = [&](int p) { return _mm512_loadu_si512(u + kX16Q5Codes + (8 * p + t) * 64); };
  if (sub < 5) return _mm512_and_si512(P(sub), _mm512_set1_epi8(0x1f));
  if (sub == 5) return and_or(_mm512_srli_epi16(P(1), 2), _mm512_set1_epi8(0x18), bits<5>(P(0), 0x07));
  if (sub == 6)
    return and_or(_mm512_srli_epi16(P(3), 1), _mm512_set1_epi8(0x10), and_or(_mm512_srli_epi16(P(2), 4), _mm512_set1_epi8(0x0e), bits<7>(P(1), 0x01)));
  return and_or(_mm512_srli_epi16(P(4), 3), _mm512_set1_epi8(0x1c), bits<6>(P(3), 0x03));
}

// The codes (u8 <= 63) of quarters p = 0..3 of slot t of a Q6_K x16 half's three
// planes (kPlane bytes apart): q(p) = plane p & 63, q(3) from the planes' top bits
// (bits 0-1 from plane 0's, 2-3 from plane 1's, 4-5 from plane 2's)
[[gnu::always_inline]] inline void q6_codes(const uint8_t* planes, int t, __m512i* c0, __m512i* c1, __m512i* c2, __m512i* c3) {
  constexpr int64_t kPlane = 8 * 64;
  const __m512i m63 = _mm512_set1_epi8(0x3f);
  const __m512i b0 = _mm512_loadu_si512(planes + t * 64), b1 = _mm512_loadu_si512(planes + kPlane + t * 64),
                b2 = _mm512_loadu_si512(planes + 2 * kPlane + t * 64);
  *c0 = _mm512_and_si512(b0, m63);
  *c1 = _mm512_and_si512(b1, m63);
  *c2 = _mm512_and_si512(b2, m63);
  *c3 = and_or(_mm512_srli_epi16(b2, 2), _mm512_set1_epi8(0x30), and_or(_mm512_srli_epi16(b1, 4), _mm512_set1_epi8(0x0c), bits<6>(b0, 0x03)));
}

// Q5_K repacked 16 rows at a time (x16, quants.h: Q4_K's d, dmin and scale
// planes, then the 5-bit codes five to a plane), MR activation rows: lane r of
// every vector is row 16g + r. Per sub-block of 32 values the 8 slots' codes
// (u8 <= 31: plane sub's low 5 bits for sub < 5, else gathered from 2-3
// planes' top bits in 4-5 ops) are made once for the MR rows, then 8 vpdpbusd
// per row with the broadcast activations, one cvt and fma by d x sc x the
// activation block's scale, and dmin x mn x the block's sum (so32).
template <int MR>
void x16k5_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nsb = k / 256, nb32 = k / 32;
  const uint8_t* base = a.w->data + g * nsb * (kX16Rows * 176);
  __m512 acc[MR], off[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = off[i] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* u = base + sb * (kX16Rows * 176);
    x16_prefetch_unit<44>(u);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32)));
#pragma GCC unroll 8
    for (int sub = 0; sub < 8; ++sub) {
      __m512i sc, mn;
      x16k_scale_min(u, sub, &sc, &mn);
      const __m512 dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)), dmn = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mn));
      __m512i c[8];
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t) c[t] = q5_codes(u, sub, t);
      const int64_t s = sb * 8 + sub;
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        const int8_t* xb = a.x.q + (i0 + i) * k + s * 32;
        __m512i p0 = _mm512_setzero_si512(), p1 = p0;  // two chains (vpdpbusd latency)
#pragma GCC unroll 4
        for (int t = 0; t < 8; t += 2) {
          p0 = _mm512_dpbusd_epi32(p0, c[t], bcast4(xb + 4 * t));
          p1 = _mm512_dpbusd_epi32(p1, c[t + 1], bcast4(xb + 4 * t + 4));
        }
        acc[i] = _mm512_fmadd_ps(dsc, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), _mm512_set1_ps(a.x.s[(i0 + i) * nb32 + s])), acc[i]);
        off[i] = _mm512_fmadd_ps(dmn, _mm512_set1_ps(a.x.so32[(i0 + i) * nb32 + s]), off[i]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) _mm512_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows, _mm512_sub_ps(acc[i], off[i]));
}

// Q6_K repacked 16 rows at a time (x16, quants.h: d, the scale planes, then the
// 6-bit codes of each half three to a plane), MR activation rows, lane r = row
// 16g + r. Per half n and quarter of slots th (4 slots: sub-blocks of 16 8n +
// 2p + th), the codes of quarter p < 3 are plane p & 63 and those of quarter 3
// gathered from the three planes' top bits (6 ops per slot), made once for the
// MR rows; per row and sub-block 4 vpdpbusd, one cvt and fma by d x sc x the
// activation block's scale. The codes' -32 comes back as -32 d sc x the
// activation sums per 16 (so).
template <int MR>
void x16q6_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nsb = k / 256, nb32 = k / 32, nb16 = k / 16;
  const uint8_t* base = a.w->data + g * nsb * (kX16Rows * 210);
  constexpr int64_t kPlane = 8 * 64;  // bytes between a slot's planes
  __m512 acc[MR], off[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = off[i] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* u = base + sb * (kX16Rows * 210);
    x16_prefetch_unit<53>(u);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      const uint8_t* planes = u + kX16Q6Codes + n * 3 * kPlane;
#pragma GCC unroll 2
      for (int th = 0; th < 2; ++th) {
        __m512i c[4][4];  // [quarter p][slot 4 th + tt]
#pragma GCC unroll 4
        for (int tt = 0; tt < 4; ++tt) q6_codes(planes, 4 * th + tt, &c[0][tt], &c[1][tt], &c[2][tt], &c[3][tt]);
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          const int64_t sub = sb * 16 + 8 * n + 2 * p + th, blk = sb * 8 + 4 * n + p;
          const __m512 dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + kX16Q6Sc + 16 * (8 * n + 2 * p + th))))));
#pragma GCC unroll 4
          for (int i = 0; i < MR; ++i) {
            const int8_t* xb = a.x.q + (i0 + i) * k + sb * 256 + 128 * n + 32 * p + 16 * th;
            __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[p][0], bcast4(xb));
            __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[p][1], bcast4(xb + 4));
            p0 = _mm512_dpbusd_epi32(p0, c[p][2], bcast4(xb + 8));
            p1 = _mm512_dpbusd_epi32(p1, c[p][3], bcast4(xb + 12));
            acc[i] = _mm512_fmadd_ps(dsc, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), _mm512_set1_ps(a.x.s[(i0 + i) * nb32 + blk])), acc[i]);
            off[i] = _mm512_fmadd_ps(dsc, _mm512_set1_ps(a.x.so[(i0 + i) * nb16 + sub]), off[i]);
          }
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) _mm512_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows, _mm512_fnmadd_ps(off[i], _mm512_set1_ps(32.f), acc[i]));
}

// Q8_0 repacked 16 rows at a time (x16, quants.h: d, then the codes as 8 slots),
// MR activation rows, lane r = row 16g + r. The codes are made unsigned (code +
// 128, one xor per slot, once for the MR rows); per row and block 8 vpdpbusd, one
// cvt and fma by d x the activation block's scale; the +128 comes back as -128 d
// x the activation block's sum (so32).
template <int MR>
void x16q8_rows(const BlockGemvArgs& a, int64_t i0, int64_t g) {
  const int64_t k = a.w->k, nb = k / 32;
  const uint8_t* base = a.w->data + g * nb * (kX16Rows * 34);
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  __m512 acc[MR], off[MR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) acc[i] = off[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* u = base + b * (kX16Rows * 34);
    if (b % 4 == 0) x16_prefetch_unit<34>(u);  // 4 blocks = 34 lines
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
    __m512i c[8];
#pragma GCC unroll 8
    for (int t = 0; t < 8; ++t) c[t] = _mm512_xor_si512(_mm512_loadu_si512(u + 2 * kX16Rows + t * 64), flip);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const int8_t* xb = a.x.q + (i0 + i) * k + b * 32;
      __m512i p0 = _mm512_setzero_si512(), p1 = p0;
#pragma GCC unroll 4
      for (int t = 0; t < 8; t += 2) {
        p0 = _mm512_dpbusd_epi32(p0, c[t], bcast4(xb + 4 * t));
        p1 = _mm512_dpbusd_epi32(p1, c[t + 1], bcast4(xb + 4 * t + 4));
      }
      acc[i] = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), _mm512_set1_ps(a.x.s[(i0 + i) * nb + b])), acc[i]);
      off[i] = _mm512_fmadd_ps(d, _mm512_set1_ps(a.x.so32[(i0 + i) * nb + b]), off[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) _mm512_storeu_ps(a.y + (i0 + i) * a.ldy + g * kX16Rows, _mm512_fnmadd_ps(off[i], _mm512_set1_ps(128.f), acc[i]));
}

template <class T, bool K>
void gemv(const BlockGemvArgs& a, int64_t j0, int64_t j1) {
  each_row<8>(a, j0, j1, [&](auto mr, int64_t i, int64_t j) {
    if constexpr (K) krows<T, decltype(mr)::value>(a, i, j);
    else lrows<T, decltype(mr)::value>(a, i, j);
  });
}

}  // namespace

void block_gemv_avx512(const BlockGemvArgs& a, int64_t j0, int64_t j1) {
  if (a.w->x16) {  // whole groups of 16 rows
    const int64_t g0 = j0 / kX16Rows, g1 = j1 / kX16Rows;
    switch (a.w->fmt->type) {
      case GgmlType::q4_k: return each_row<2>(a, g0, g1, [&](auto mr, int64_t i, int64_t g) { x16k_rows<decltype(mr)::value>(a, i, g); });
      case GgmlType::q5_k: return each_row<2>(a, g0, g1, [&](auto mr, int64_t i, int64_t g) { x16k5_rows<decltype(mr)::value>(a, i, g); });
      case GgmlType::q6_k: return each_row<2>(a, g0, g1, [&](auto mr, int64_t i, int64_t g) { x16q6_rows<decltype(mr)::value>(a, i, g); });
      case GgmlType::q8_0: return each_row<2>(a, g0, g1, [&](auto mr, int64_t i, int64_t g) { x16q8_rows<decltype(mr)::value>(a, i, g); });
      default: return each_row<8>(a, g0, g1, [&](auto mr, int64_t i, int64_t g) { x16_rows<decltype(mr)::value>(a, i, g); });  // Q4_0
    }
  }
  switch (a.w->fmt->type) {
    case GgmlType::q4_0: return gemv<ZQ4_0, false>(a, j0, j1);
    case GgmlType::q4_1: return gemv<ZQ4_1, false>(a, j0, j1);
    case GgmlType::q5_0: return gemv<ZQ5_0, false>(a, j0, j1);
    case GgmlType::q5_1: return gemv<ZQ5_1, false>(a, j0, j1);
    case GgmlType::q8_0: return gemv<ZQ8_0, false>(a, j0, j1);
    case GgmlType::iq4_nl: return gemv<ZIQ4_NL, false>(a, j0, j1);
    case GgmlType::q2_k: return gemv<ZQ2_K, true>(a, j0, j1);
    case GgmlType::q3_k: return gemv<ZQ3_K, true>(a, j0, j1);
    case GgmlType::q4_k: return gemv<ZQK4, true>(a, j0, j1);
    case GgmlType::q5_k: return gemv<ZQK5, true>(a, j0, j1);
    case GgmlType::q6_k: return gemv<ZQ6_K, true>(a, j0, j1);
    case GgmlType::iq4_xs: return gemv<ZIQ4_XS, true>(a, j0, j1);
    default: return block_gemv_ref(a, j0, j1);
  }
}

// x16 groups straight into the int8 GEMM's blocks (x16_pack_ref, quants.cpp): a
// quarter of 16 rows' codes is one vector, so each nibble half is one block of
// the n16k4 layout; the row sums are vpdpbusd with ones.
bool x16_pack_avx512(GgmlType type, const uint8_t* group, int64_t k, int64_t k_pad, int8_t* blk, int32_t* colsum, float* scales,
                     float* offsets) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
  auto nibbles = [&](const uint8_t* p, __m512i* lo, __m512i* hi) {
    const __m512i v = _mm512_loadu_si512(p);
    *lo = _mm512_and_si512(v, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  };
  std::memset(blk + k * kX16Rows, 0, size_t((k_pad - k) * kX16Rows));
  if (type == GgmlType::q4_0) {
    const __m512i eight = _mm512_set1_epi8(8), bias = _mm512_set1_epi32(256);  // 32 values x 8
    x16_q4_0_blocks(group, k / 32, false, [&](int64_t b, const uint8_t* sc, const uint8_t* codes) {
      _mm512_storeu_ps(scales + b * kX16Rows, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc))));
      __m512i sum = zero;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        __m512i lo, hi;
        nibbles(codes + q * 64, &lo, &hi);
        sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum, lo, ones), hi, ones);
        _mm512_storeu_si512(blk + (b * 8 + q) * 64, _mm512_sub_epi8(lo, eight));
        _mm512_storeu_si512(blk + (b * 8 + 4 + q) * 64, _mm512_sub_epi8(hi, eight));
      }
      _mm512_storeu_si512(colsum + b * kX16Rows, _mm512_sub_epi32(sum, bias));
    });
    return false;
  }
  auto store = [&](int64_t quad, __m512i v) { _mm512_storeu_si512(blk + quad * 64, v); };
  auto put_scales = [&](int64_t g, __m512 v) { _mm512_storeu_ps(scales + g * kX16Rows, v); };
  auto put_sums = [&](int64_t g, __m512i v) { _mm512_storeu_si512(colsum + g * kX16Rows, v); };
  if (type == GgmlType::q8_0) {  // the codes are the layout's steps already
    const __m512i m128 = _mm512_set1_epi8(char(0x80));
    __mmask64 seen = 0;
    for (int64_t b = 0; b < k / 32; ++b) {
      const uint8_t* u = group + b * kX16Rows * 34;
      put_scales(b, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u))));
      __m512i sum = zero;
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t) {
        const __m512i v = _mm512_loadu_si512(u + 2 * kX16Rows + t * 64);
        seen |= _mm512_cmpeq_epi8_mask(v, m128);
        sum = _mm512_dpbusd_epi32(sum, ones, v);
        store(b * 8 + t, v);
      }
      put_sums(b, sum);
    }
    return seen != 0;
  }
  if (type == GgmlType::q6_k) {  // groups of 16: sub-block 8n + 2p + t / 4 of each super-block
    const __m512i m32 = _mm512_set1_epi8(32);
    for (int64_t sb = 0; sb < k / 256; ++sb) {
      const uint8_t* u = group + sb * kX16Rows * 210;
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
      for (int s = 0; s < 16; ++s)
        put_scales(sb * 16 + s, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + kX16Q6Sc + 16 * s))))));
      for (int n = 0; n < 2; ++n)
        for (int th = 0; th < 2; ++th) {
          __m512i sum[4] = {zero, zero, zero, zero};
          for (int t = 4 * th; t < 4 * th + 4; ++t) {
            __m512i c[4];
            q6_codes(u + kX16Q6Codes + n * 3 * 8 * 64, t, &c[0], &c[1], &c[2], &c[3]);
#pragma GCC unroll 4
            for (int p = 0; p < 4; ++p) {
              const __m512i v = _mm512_sub_epi8(c[p], m32);
              sum[p] = _mm512_dpbusd_epi32(sum[p], ones, v);
              store(sb * 64 + 32 * n + 8 * p + t, v);
            }
          }
          for (int p = 0; p < 4; ++p) put_sums(sb * 16 + 8 * n + 2 * p + th, sum[p]);
        }
    }
    return false;
  }
  // Q4_K and Q5_K: the same header (d, dmin, the scale planes)
  const int64_t sb_bytes = kX16Rows * (type == GgmlType::q5_k ? 176 : 144);
  for (int64_t sb = 0; sb < k / 256; ++sb) {
    const uint8_t* u = group + sb * sb_bytes;
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
    // -(dmin * mn) as (-dmin) * mn: the same value, zeros' signs included
    const __m512 ndmin = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32))), _mm512_set1_ps(-1.f));
    for (int sub = 0; sub < 8; ++sub) {
      __m512i sc, mn;
      x16k_scale_min(u, sub, &sc, &mn);
      _mm512_storeu_ps(scales + (sb * 8 + sub) * kX16Rows, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
      _mm512_storeu_ps(offsets + (sb * 8 + sub) * kX16Rows, _mm512_mul_ps(ndmin, _mm512_cvtepi32_ps(mn)));
    }
    if (type == GgmlType::q5_k) {
      for (int sub = 0; sub < 8; ++sub) {
        __m512i sum = zero;
#pragma GCC unroll 8
        for (int t = 0; t < 8; ++t) {
          const __m512i c = q5_codes(u, sub, t);
          sum = _mm512_dpbusd_epi32(sum, c, ones);
          store(sb * 64 + 8 * sub + t, c);
        }
        put_sums(sb * 8 + sub, sum);
      }
      continue;
    }
    for (int j = 0; j < 4; ++j) {
      __m512i slo = zero, shi = zero;
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t) {
        __m512i lo, hi;
        nibbles(u + 256 + (8 * j + t) * 64, &lo, &hi);
        slo = _mm512_dpbusd_epi32(slo, lo, ones);
        shi = _mm512_dpbusd_epi32(shi, hi, ones);
        _mm512_storeu_si512(blk + (sb * 64 + 16 * j + t) * 64, lo);
        _mm512_storeu_si512(blk + (sb * 64 + 16 * j + 8 + t) * 64, hi);
      }
      _mm512_storeu_si512(colsum + (sb * 8 + 2 * j) * kX16Rows, slo);
      _mm512_storeu_si512(colsum + (sb * 8 + 2 * j + 1) * kX16Rows, shi);
    }
  }
  return false;
}

}  // namespace sparq
