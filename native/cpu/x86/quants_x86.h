// quants_x86.h - pieces of the GGUF block kernels shared by the AVX2 and the
// AVX-512 files (each includes it under its own ISA flags; everything here is
// internal to the including file): f16 scalars, the 32-value code unpackers,
// the super-block scales of the K types, and the GEMV row loop.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../quants.h"

namespace sparq {
namespace {

constexpr int8_t kIq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
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

// The 256-value types. prep(b, &ks) gives the super-block's integer scale and offset
// multiplier of each group of 16 (sc16, mo16: 16 int16 lanes) and its floats
// d, dO, so that w = d * sc16[g] * u + dO * mo16[g]; codes(b, f) calls f(sub, u)
// with the codes u of every 32 values.
struct KScales {
  __m256i sc16, mo16;
  float d, dO;
};
// 8 bytes -> 16 int16 lanes, each byte twice (a scale per 32 -> per 16)
inline __m256i dup8(uint64_t bytes) {
  const __m128i b = _mm_shuffle_epi8(_mm_cvtsi64_si128(int64_t(bytes)), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
  return _mm256_cvtepu8_epi16(b);
}
// The 6-bit scales (bytes 0-7) and mins (8-15) of the Q4_K / Q5_K 12-byte field
// (scale_min_k4, four at a time).
[[gnu::always_inline]] inline void k4_scales(const uint8_t* s, uint64_t* sc, uint64_t* mn) {
  uint32_t w0, w1, w2;
  std::memcpy(&w0, s, 4);
  std::memcpy(&w1, s + 4, 4);
  std::memcpy(&w2, s + 8, 4);
  const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
  *sc = uint64_t(w0 & m6) | uint64_t((w2 & m4) | ((w0 >> 6) & m2) << 4) << 32;
  *mn = uint64_t(w1 & m6) | uint64_t(((w2 >> 4) & m4) | ((w1 >> 6) & m2) << 4) << 32;
}

// The super-block scales of each K type (prep(b, &ks)).
[[gnu::always_inline]] inline void prep_iq4_xs(const uint8_t* b, KScales* k) {
  uint16_t sh;
  std::memcpy(&sh, b + 2, 2);
  // the 8 6-bit scales as bytes: nibble ib of scales_l (bytes 4-7) | 2-bit field
  // ib of scales_h << 4, spread by shifts and masks (a scalar loop over ib was the
  // body's bottleneck)
  uint32_t sl;
  std::memcpy(&sl, b + 4, 4);
  uint64_t lo = sl;
  lo = (lo | lo << 16) & 0x0000FFFF0000FFFFull;
  lo = (lo | lo << 8) & 0x00FF00FF00FF00FFull;
  lo = (lo | lo << 4) & 0x0F0F0F0F0F0F0F0Full;
  uint64_t hi = sh;
  hi = (hi | hi << 24) & 0x000000FF000000FFull;
  hi = (hi | hi << 12) & 0x000F000F000F000Full;
  hi = (hi | hi << 6) & 0x0303030303030303ull;
  const uint64_t ls = lo | hi << 4;
  k->sc16 = _mm256_sub_epi16(dup8(ls), _mm256_set1_epi16(32));
  k->mo16 = _mm256_setzero_si256();
  k->d = h2f(b);
  k->dO = 0.f;
}
[[gnu::always_inline]] inline void prep_qk45(const uint8_t* b, KScales* k) {  // Q4_K and Q5_K
  uint64_t sc, mn;
  k4_scales(b + 4, &sc, &mn);
  k->sc16 = dup8(sc);
  k->mo16 = dup8(mn);
  k->d = h2f(b);
  k->dO = -h2f(b + 2);
}
[[gnu::always_inline]] inline void prep_q6_k(const uint8_t* b, KScales* k) {
  k->sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
  k->mo16 = k->sc16;  // w = d * sc * (u - 32)
  k->d = h2f(b + 208);
  k->dO = -32.f * k->d;
}
[[gnu::always_inline]] inline void prep_q2_k(const uint8_t* b, KScales* k) {
  const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  k->sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(s, lo4));
  k->mo16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), lo4));
  k->d = h2f(b + 80);
  k->dO = -h2f(b + 82);
}
[[gnu::always_inline]] inline void prep_q3_k(const uint8_t* b, KScales* k) {
  // 16 6-bit scales: low nibbles from bytes 0-7, high pairs from bytes 8-11 (scale_q3k, four at a time)
  uint32_t w0, w1, w2;
  std::memcpy(&w0, b + 96, 4);
  std::memcpy(&w1, b + 100, 4);
  std::memcpy(&w2, b + 104, 4);
  const uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303;
  const uint32_t a0 = (w0 & m4) | (w2 & m2) << 4, a1 = (w1 & m4) | ((w2 >> 2) & m2) << 4;
  const uint32_t a2 = ((w0 >> 4) & m4) | ((w2 >> 4) & m2) << 4, a3 = ((w1 >> 4) & m4) | ((w2 >> 6) & m2) << 4;
  k->sc16 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_setr_epi32(int(a0), int(a1), int(a2), int(a3))), _mm256_set1_epi16(32));
  k->mo16 = k->sc16;  // w = d * s * (u - 4)
  k->d = h2f(b + 108);
  k->dO = -4.f * k->d;
}

// Every weight row in [j0, j1) against the activation rows, kMax (8 or 4), 4,
// 2 then 1 at a time: rows(std::integral_constant<int, MR>, i, j).
template <int kMax = 4, class Rows>
inline void each_row(const BlockGemvArgs& a, int64_t j0, int64_t j1, Rows&& rows) {
  for (int64_t j = j0; j < j1; ++j) {
    int64_t i = 0;
    if constexpr (kMax >= 8)
      for (; i + 8 <= a.x.m; i += 8) rows(std::integral_constant<int, 8>{}, i, j);
    for (; i + 4 <= a.x.m; i += 4) rows(std::integral_constant<int, 4>{}, i, j);
    for (; i + 2 <= a.x.m; i += 2) rows(std::integral_constant<int, 2>{}, i, j);
    for (; i < a.x.m; ++i) rows(std::integral_constant<int, 1>{}, i, j);
  }
}

// The AVX-512 x16 GEMVs' software prefetch distance, bytes ahead in a group's one stream
// (1B decode-shaped sweep, 2 threads: 4 to 16 KiB within 2%; PERFORMANCE.md).
constexpr int64_t kX16Prefetch = 8192;

// A software prefetch the compiler keeps: GCC 12 deletes a loop whose body is
// only _mm_prefetch calls (it takes them as free of side effects).
inline void prefetch_t0(const void* p) { asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }

// The kLines lines (36 = 2304 bytes: a Q4_0 x16 unit or a Q4_K x16 super-block;
// Q5_K 44, Q6_K 53, Q8_0 9) kX16Prefetch bytes after p, in one burst per unit
// (the AVX-512 bodies).
template <int kLines = 36>
inline void x16_prefetch_unit(const uint8_t* p) {
  for (int q = 0; q < kLines; ++q) prefetch_t0(p + kX16Prefetch + 64 * q);
}

// Lines [first, first + count) of the `lines` lines at p, those before end: the
// AVX2 x16 bodies ask for the next unit / super-block / block a few lines per
// step of the current one (bursts fill the miss queue on Zen 1; PERFORMANCE.md).
inline void prefetch_lines(const uint8_t* p, int64_t first, int64_t count, int64_t lines, const uint8_t* end) {
  for (int64_t l = first; l < first + count && l < lines && p + 64 * l < end; ++l) prefetch_t0(p + 64 * l);
}

// f(b, scales, codes) for every block b of a Q4_0 x16 group of nb blocks, unit
// by unit (quants.h): its 16 rows' f16 scales and its 256 code bytes.
template <class F>
inline void x16_q4_0_blocks(const uint8_t* group, int64_t nb, bool prefetch, F&& f) {
  for (int64_t u = 0; u < nb; u += kX16Q4Unit) {
    const uint8_t* unit = group + x16_q4_0_scales_at(u);
    if (prefetch) x16_prefetch_unit(unit);
    const uint8_t* codes = group + x16_q4_0_codes_at(nb, u);
    for (int64_t i = 0, ub = x16_q4_0_unit_blocks(nb, u); i < ub; ++i) f(u + i, unit + i * 32, codes + i * 256);
  }
}

}  // namespace
}  // namespace sparq
