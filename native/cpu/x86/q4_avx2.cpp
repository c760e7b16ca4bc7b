// q4_avx2.cpp - the 4-bit GEMV for m <= 8 activation rows. Two blocks of 32
// weights (32 bytes) are read at once: their low nibbles give values [0, 16) of
// both blocks, their high nibbles values [16, 32), so the activations are
// permuted once per task to match (for each 64 values: 0-15, 32-47, then 16-31,
// 48-63). Unsigned nibbles u = v + 8 multiply the int8 activations by
// vpmaddubsw (pair sums up to 2 x 15 x 127; two of them added stay below 2^15)
// and vpmaddwd into exact int32 per group; the +8 is taken back with the group's
// activation sum, then each group is scaled into f32.
#include <cassert>
#include <immintrin.h>

#include <vector>

#include "../q4.h"
#include "../rows.h"
#include "avx2_math.h"

namespace sparq {
namespace {

// Per-task activation layout: xp (MR rows, stride ldq) permuted as above; for
// groups of 32, corr holds for each block pair [-8 sum(x) of the first block,
// 0, 0, 0, -8 sum(x) of the second, 0, 0, 0].
struct Prepared {
  const int8_t* xp;
  const int32_t* corr;
  int64_t pairs;
};

inline __m256i nibbles_lo(__m256i bytes) { return _mm256_and_si256(bytes, _mm256_set1_epi8(0x0f)); }
inline __m256i nibbles_hi(__m256i bytes) { return _mm256_and_si256(_mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0f)); }

// Sum of u . x over a block pair, as 8 int32 lanes (lanes 0-3: the first block, 4-7: the second).
inline __m256i pair_dot(__m256i ulo, __m256i uhi, const int8_t* x) {
  const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32));
  const __m256i d = _mm256_add_epi16(_mm256_maddubs_epi16(ulo, xl), _mm256_maddubs_epi16(uhi, xh));
  return _mm256_madd_epi16(d, _mm256_set1_epi16(1));
}

// Sum of u . x over one block (16 bytes of W, 32 activations in their original order).
inline __m256i block_dot(const uint8_t* w, const int8_t* x) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  const __m256i u = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(bytes, lo4)), _mm_and_si128(_mm_srli_epi16(bytes, 4), lo4), 1);
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), _mm256_set1_epi16(1));
}

inline __m256i lane0(int32_t v) { return _mm256_zextsi128_si256(_mm_cvtsi32_si128(v)); }

// Exact int32 sums before any scaling: the lanes carry the +8 bias of the
// unsigned nibbles (taken back in lane 0), so scaling lanes separately would
// round large terms that cancel. halves: [A x4 | B x4], the sums of each 128-bit
// half; all: the total in all 8 lanes.
inline __m256i sum_halves(__m256i v) {
  v = _mm256_hadd_epi32(v, v);
  return _mm256_hadd_epi32(v, v);
}
inline __m256i sum_all(__m256i v) {
  v = sum_halves(v);
  return _mm256_add_epi32(v, _mm256_permute2x128_si256(v, v, 1));
}

// Groups of 32: one scale per block, applied to each block pair's two halves.
template <int MR>
void rows_g32(const Q4Args& a, const Prepared& x, int64_t j0, int64_t j1) {
  const PackedQ4& p = *a.w;
  const int64_t blocks = p.k_pad / 32;
  const __m256i half = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  for (int64_t j = j0; j < j1; ++j) {
    const uint8_t* row = p.data.data() + j * p.row_bytes();
    const float* sc = p.scale.data() + j * p.groups;
    __m256 accf[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) accf[i] = _mm256_setzero_ps();
    for (int64_t q = 0; q < x.pairs; ++q) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + q * 32));
      const __m256i ulo = nibbles_lo(bytes), uhi = nibbles_hi(bytes);
      // the pair's two scales (8 bytes, any alignment) spread over the halves
      const __m128 two = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 2 * q)));
      const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), half);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.corr + (i * x.pairs + q) * 8));
        const __m256i acc = sum_halves(_mm256_add_epi32(c, pair_dot(ulo, uhi, x.xp + i * a.ldq + q * 64)));
        accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), s, accf[i]);  // each block's sum x its scale, 4 times
      }
    }
    if (blocks & 1) {  // the last block alone: its sum in all 8 lanes, half the scale (4 times in all)
      const int64_t b = blocks - 1;
      const __m256 s = _mm256_set1_ps(0.5f * sc[b]);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m256i acc = sum_all(_mm256_add_epi32(lane0(-8 * a.xsum[i * p.groups + b]), block_dot(row + b * 16, a.xq + i * a.ldq + b * 32)));
        accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), s, accf[i]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.y[i * p.n + j] = avx2::hsum(accf[i]) * 0.25f * a.xs[i];
  }
}

// Groups of 64 or 128 (G = 2 or 4 blocks): block pairs never straddle a group.
template <int MR, int G>
void rows_wide(const Q4Args& a, const Prepared& x, int64_t j0, int64_t j1) {
  const PackedQ4& p = *a.w;
  const int64_t blocks = p.k_pad / 32, full = blocks / G;  // groups with all G blocks, then maybe a partial one
  for (int64_t j = j0; j < j1; ++j) {
    const uint8_t* row = p.data.data() + j * p.row_bytes();
    const float* sc = p.scale.data() + j * p.groups;
    __m256 accf[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) accf[i] = _mm256_setzero_ps();
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t b0 = g * G, b1 = g < full ? b0 + G : blocks;
      __m256i acc[MR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i] = lane0(-8 * a.xsum[i * p.groups + g]);
      const auto pair = [&](int64_t b) {
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * 16));
        const __m256i ulo = nibbles_lo(bytes), uhi = nibbles_hi(bytes);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) acc[i] = _mm256_add_epi32(acc[i], pair_dot(ulo, uhi, x.xp + i * a.ldq + b * 32));
      };
      if (g < full) {  // a fixed count: unrolled
#pragma GCC unroll 2
        for (int h = 0; h < G; h += 2) pair(b0 + h);
      } else {
        int64_t b = b0;
        for (; b + 2 <= b1; b += 2) pair(b);
        if (b < b1) {
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) acc[i] = _mm256_add_epi32(acc[i], block_dot(row + b * 16, a.xq + i * a.ldq + b * 32));
        }
      }
      const __m256 s = _mm256_set1_ps(0.5f * sc[g]);  // the group's exact sum in all 8 lanes: 4 times in all
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_all(acc[i])), s, accf[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.y[i * p.n + j] = avx2::hsum(accf[i]) * 0.25f * a.xs[i];
  }
}

// More than 4 rows of wide groups would not fit their int32 and f32
// accumulators in 16 registers: the first 4, then the rest, over the same rows of W.
template <int MR, int G>
void rows_wide_split(const Q4Args& a, const Prepared& x, int64_t j0, int64_t j1) {
  if constexpr (MR <= 4) {
    rows_wide<MR, G>(a, x, j0, j1);
  } else {
    rows_wide<4, G>(a, x, j0, j1);
    Q4Args b = a;
    b.xq += 4 * a.ldq;
    b.xs += 4;
    b.xsum += 4 * a.w->groups;
    b.y += 4 * a.w->n;
    b.m -= 4;
    rows_wide<MR - 4, G>(b, Prepared{x.xp + 4 * a.ldq, x.corr, x.pairs}, j0, j1);
  }
}

template <int MR>
void rows(const Q4Args& a, const Prepared& x, int64_t j0, int64_t j1) {
  switch (a.w->group) {
    case 32: rows_g32<MR>(a, x, j0, j1); break;
    case 64: rows_wide_split<MR, 2>(a, x, j0, j1); break;
    default: rows_wide_split<MR, 4>(a, x, j0, j1); break;
  }
}

}  // namespace

void q4_gemv_avx2(const Q4Args& a, int64_t j0, int64_t j1) {
  const PackedQ4& p = *a.w;
  const int64_t pairs = p.k_pad / 64;
  // this thread's permuted activations (and group-32 corrections), reused across calls
  thread_local std::vector<int8_t> xp;
  thread_local std::vector<int32_t> corr;
  if (int64_t(xp.size()) < a.m * a.ldq) xp.resize(size_t(a.m * a.ldq));
  for (int64_t i = 0; i < a.m; ++i)
    for (int64_t q = 0; q < pairs; ++q) {
      const int8_t* src = a.xq + i * a.ldq + q * 64;
      int8_t* dst = xp.data() + i * a.ldq + q * 64;
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute2x128_si256(x0, x1, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32), _mm256_permute2x128_si256(x0, x1, 0x31));
    }
  if (p.group == 32) {
    if (int64_t(corr.size()) < a.m * pairs * 8) corr.resize(size_t(a.m * pairs * 8));
    for (int64_t i = 0; i < a.m; ++i)
      for (int64_t q = 0; q < pairs; ++q) {
        int32_t* c = corr.data() + (i * pairs + q) * 8;
        c[0] = -8 * a.xsum[i * p.groups + 2 * q];
        c[4] = 2 * q + 1 < p.groups ? -8 * a.xsum[i * p.groups + 2 * q + 1] : 0;
        c[1] = c[2] = c[3] = c[5] = c[6] = c[7] = 0;
      }
  }
  const Prepared x{xp.data(), corr.data(), pairs};
  assert(1 <= a.m && a.m <= 8 && 0 <= j0 && j0 <= j1 && j1 <= p.n);
  dispatch_rows<8>(a.m, [&](auto M) { rows<decltype(M)::value>(a, x, j0, j1); });  // m in [1, 8] (asserted above)
}

}  // namespace sparq
