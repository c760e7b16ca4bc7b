// sgemm_avx2.cpp - f32 GEMM (packed-B, 16-column panels) and row-dot GEMV for
// AVX2 + FMA.
//
// sgemm: the driver of sgemm_impl.h around a 6 x 16 register tile
// (tile_6x16_avx2: 12 ymm accumulators, 2 B loads + 6 broadcasts per k); A row
// blocks are packed in strips of 6 rows when the range has >= 3 panels; row
// tails use 5..1-row instantiations, the last (partial) panel masked C/bias access.
// sgemv: 4 rows of w in flight; x rows in groups of 3 (3 x 4 = 12 accumulators)
// or 2, m == 1 uses 2 accumulators per w row; k walked in L1-sized chunks when
// m > 1, masked k tail, 4-way horizontal sum at the end.
// Tested (scratch harness, not in the repo) against sgemm_ref / sgemv_ref and
// an f64 reference on awkward shapes: m in {1,2,3,7,8,13,64,129,300}, n in
// {1,3,17,61,257,1000,4099}, k in {0,1,3,17,61,257,1000,4099}, bias on/off,
// ranges starting mid-matrix, concurrent disjoint ranges, under ASan, and
// checked that nothing outside the requested range is written.
// Performance note: keep bp 64-byte aligned (one k row of a panel = one cache
// line); a 16-byte offset costs ~15% on Zen 3.
#include <immintrin.h>

#include <cassert>
#include <cstdint>
#include <cstdlib>

#include "../kernels.h"
#include "sgemm_impl.h"
#include "sgemv_impl.h"

namespace sparq {
namespace {


// Lanes [0, n) set; n is clamped to [0, 8] (so the table is never read outside).
inline __m256i lane_mask(int64_t n) {
  alignas(32) static const int32_t tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  n = n < 0 ? 0 : n > 8 ? 8 : n;
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tbl + 8 - n));
}

// ---------------------------------------------------------------------------
// sgemm micro-kernel: C[MR x 16] (+)= A[MR x kc] * Bpanel[kc x 16].
// PACKED: a[p * MR + r]; otherwise a[r * lda + p] (row-major, unpacked).
// init: C = acc (+ bias) instead of C += acc. ncols in [1, 16] columns valid.
template <int MR, bool PACKED>
void tile_6x16_avx2(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, float* c,
         int64_t ldc, bool init, const float* bias, int64_t ncols, const float* pf, int64_t npf) {
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();

  const auto step = [&](int64_t p) __attribute__((always_inline)) {
    const __m256 b0 = _mm256_loadu_ps(b + p * 16);
    const __m256 b1 = _mm256_loadu_ps(b + p * 16 + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(PACKED ? a + p * MR + r : a + r * lda + p);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  };
  // The first npf k steps also prefetch one 64-byte row of the next B sub-panel.
  int64_t p = 0;
#pragma GCC unroll 2
  for (; p < npf; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(pf + p * 16), _MM_HINT_T0);
    step(p);
  }
#pragma GCC unroll 2
  for (; p < kc; ++p) step(p);

  if (ncols == 16) {
    __m256 bv0 = _mm256_setzero_ps(), bv1 = _mm256_setzero_ps();
    if (init && bias) {
      bv0 = _mm256_loadu_ps(bias);
      bv1 = _mm256_loadu_ps(bias + 8);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m256 v0 = acc0[r], v1 = acc1[r];
      if (init) {
        v0 = _mm256_add_ps(v0, bv0);
        v1 = _mm256_add_ps(v1, bv1);
      } else {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cr));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    }
  } else {
    const __m256i m0 = lane_mask(ncols < 8 ? ncols : 8);
    const __m256i m1 = lane_mask(ncols > 8 ? ncols - 8 : 0);
    __m256 bv0 = _mm256_setzero_ps(), bv1 = _mm256_setzero_ps();
    if (init && bias) {
      bv0 = _mm256_maskload_ps(bias, m0);
      bv1 = _mm256_maskload_ps(bias + 8, m1);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m256 v0 = acc0[r], v1 = acc1[r];
      if (init) {
        v0 = _mm256_add_ps(v0, bv0);
        v1 = _mm256_add_ps(v1, bv1);
      } else {
        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(cr, m0));
        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(cr + 8, m1));
      }
      _mm256_maskstore_ps(cr, m0, v0);
      _mm256_maskstore_ps(cr + 8, m1, v1);
    }
  }
}

// One R-row strip of A, k range [0, kc): ap[p * R + r] = a[r * lda + p].
template <int R>
inline void pack_strip_rows(const float* __restrict a, int64_t lda, int64_t kc, float* __restrict ap) {
  const float* ar[R];
  for (int r = 0; r < R; ++r) ar[r] = a + r * lda;
  int64_t p = 0;
  // 4 k values per row at a time: 4 x R floats out, contiguous.
  for (; p + 4 <= kc; p += 4) {
    __m128 v[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) v[r] = _mm_loadu_ps(ar[r] + p);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      alignas(16) float t[4];
      _mm_store_ps(t, v[r]);
      ap[(p + 0) * R + r] = t[0];
      ap[(p + 1) * R + r] = t[1];
      ap[(p + 2) * R + r] = t[2];
      ap[(p + 3) * R + r] = t[3];
    }
  }
  for (; p < kc; ++p)
    for (int r = 0; r < R; ++r) ap[p * R + r] = ar[r][p];
}

// 6-row strip: 8 k values per step (4x4 in-lane transpose of rows 0..3, pairs of rows 4..5).
inline void pack_strip6(const float* __restrict a, int64_t lda, int64_t kc, float* __restrict ap) {
  const float* a0 = a;
  const float* a1 = a + lda;
  const float* a2 = a + 2 * lda;
  const float* a3 = a + 3 * lda;
  const float* a4 = a + 4 * lda;
  const float* a5 = a + 5 * lda;
  int64_t p = 0;
  for (; p + 8 <= kc; p += 8) {
    const __m256 r0 = _mm256_loadu_ps(a0 + p), r1 = _mm256_loadu_ps(a1 + p);
    const __m256 r2 = _mm256_loadu_ps(a2 + p), r3 = _mm256_loadu_ps(a3 + p);
    const __m256 r4 = _mm256_loadu_ps(a4 + p), r5 = _mm256_loadu_ps(a5 + p);
    // 4x4 transposes of rows 0..3 (per 128-bit lane) and rows 4..5.
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1);  // 00 10 01 11 | 04 14 05 15
    const __m256 t1 = _mm256_unpackhi_ps(r0, r1);  // 02 12 03 13 | 06 16 07 17
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3);  // 20 30 21 31 | ...
    const __m256 t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5);  // 40 50 41 51 | 44 54 45 55
    const __m256 t5 = _mm256_unpackhi_ps(r4, r5);  // 42 52 43 53 | 46 56 47 57
    const __m256 c0 = _mm256_shuffle_ps(t0, t2, 0x44);  // 00 10 20 30 | 04 14 24 34
    const __m256 c1 = _mm256_shuffle_ps(t0, t2, 0xEE);  // 01 11 21 31 | 05 ...
    const __m256 c2 = _mm256_shuffle_ps(t1, t3, 0x44);  // 02 12 22 32 | 06 ...
    const __m256 c3 = _mm256_shuffle_ps(t1, t3, 0xEE);  // 03 13 23 33 | 07 ...
    float* o = ap + p * 6;
    // Column q (k = p + q) goes to o[q * 6 .. q * 6 + 5]: rows 0..3 then 4..5.
    const __m128 c0l = _mm256_castps256_ps128(c0), c0h = _mm256_extractf128_ps(c0, 1);
    const __m128 c1l = _mm256_castps256_ps128(c1), c1h = _mm256_extractf128_ps(c1, 1);
    const __m128 c2l = _mm256_castps256_ps128(c2), c2h = _mm256_extractf128_ps(c2, 1);
    const __m128 c3l = _mm256_castps256_ps128(c3), c3h = _mm256_extractf128_ps(c3, 1);
    const __m128 t4l = _mm256_castps256_ps128(t4), t4h = _mm256_extractf128_ps(t4, 1);
    const __m128 t5l = _mm256_castps256_ps128(t5), t5h = _mm256_extractf128_ps(t5, 1);
    _mm_storeu_ps(o + 0, c0l);
    _mm_storel_pi(reinterpret_cast<__m64*>(o + 4), t4l);
    _mm_storeu_ps(o + 6, c1l);
    _mm_storeh_pi(reinterpret_cast<__m64*>(o + 10), t4l);
    _mm_storeu_ps(o + 12, c2l);
    _mm_storel_pi(reinterpret_cast<__m64*>(o + 16), t5l);
    _mm_storeu_ps(o + 18, c3l);
    _mm_storeh_pi(reinterpret_cast<__m64*>(o + 22), t5l);
    _mm_storeu_ps(o + 24, c0h);
    _mm_storel_pi(reinterpret_cast<__m64*>(o + 28), t4h);
    _mm_storeu_ps(o + 30, c1h);
    _mm_storeh_pi(reinterpret_cast<__m64*>(o + 34), t4h);
    _mm_storeu_ps(o + 36, c2h);
    _mm_storel_pi(reinterpret_cast<__m64*>(o + 40), t5h);
    _mm_storeu_ps(o + 42, c3h);
    _mm_storeh_pi(reinterpret_cast<__m64*>(o + 46), t5h);
  }
  for (; p < kc; ++p) {
    float* o = ap + p * 6;
    o[0] = a0[p];
    o[1] = a1[p];
    o[2] = a2[p];
    o[3] = a3[p];
    o[4] = a4[p];
    o[5] = a5[p];
  }
}

// The register tile for the driver (sgemm_impl.h): 6 rows x one 16-column panel.
struct SgemmTile6x16Avx2 {
  static constexpr int kMR = 6, kNP = 1;
  static constexpr int64_t kKC = 256;  // k block: a 16-column B sub-panel is 16 KiB (L1)
  static constexpr int64_t kMC = 96;   // row block: the packed A block is 96 KiB (L2)
  static constexpr int64_t kPackPanels = 3;  // measured: 1-2 panels run as fast or faster from row-major A
  template <int MR, int NP, bool PACKED>
  static void tile(int64_t kc, const float* a, int64_t lda, const float* b, int64_t, float* c, int64_t ldc, bool init,
                   const float* bias, int64_t ncols, const float* pf0, const float*, int64_t npf) {
    static_assert(NP == 1, "one panel");
    tile_6x16_avx2<MR, PACKED>(kc, a, lda, b, c, ldc, init, bias, ncols, pf0, npf);
  }
  template <int R>
  static void pack_strip(const float* a, int64_t lda, int64_t kc, float* ap) {
    if constexpr (R == 6) pack_strip6(a, lda, kc, ap);
    else pack_strip_rows<R>(a, lda, kc, ap);
  }
};

// ---------------------------------------------------------------------------
// sgemv (sgemv_impl.h) at the AVX2 width: x rows in groups of 3 (4 rows go as
// 2 + 2, a single row only when rows == 1).
struct SgemvAvx2 {
  using F = __m256;
  using Mask = __m256i;
  static constexpr int64_t kLanes = 8;
  static constexpr int kMaxGroup = 3;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static Mask tail(int64_t n) { return lane_mask(n); }
  static F load_tail(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  template <int MR>
  static void pin(F& v) {
    if (MR == 2) __asm__("" : "+x"(v));
  }
  static __m128 hsum4(F v0, F v1, F v2, F v3) {
    const __m256 s01 = _mm256_hadd_ps(v0, v1);  // a01 a23 b01 b23 | a45 a67 b45 b67
    const __m256 s23 = _mm256_hadd_ps(v2, v3);
    const __m256 s = _mm256_hadd_ps(s01, s23);  // a0123 b0123 c0123 d0123 | a4567 ...
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  }
  static __m128 load4(const float* p, int n) { return _mm_maskload_ps(p, _mm256_castsi256_si128(lane_mask(n))); }
  static void store4(float* p, int n, __m128 v) {
    if (n == 4) _mm_storeu_ps(p, v);
    else _mm_maskstore_ps(p, _mm256_castsi256_si128(lane_mask(n)), v);
  }
  static int group(int64_t rem) { return rem >= 5 || rem == 3 ? 3 : rem == 1 ? 1 : 2; }
};

}  // namespace

void sgemm_avx2(const SgemmArgs& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) { sgemm::run<SgemmTile6x16Avx2>(p, m0, m1, nb0, nb1); }

void sgemv_avx2(const SgemvArgs& p, int64_t n0, int64_t n1) { sgemv::run<SgemvAvx2>(p, n0, n1); }

}  // namespace sparq
