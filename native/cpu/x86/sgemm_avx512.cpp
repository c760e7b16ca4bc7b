// sgemm_avx512.cpp - f32 GEMM (packed-B, 16-column panels) and row-dot GEMV for
// AVX-512 (F/BW/VL/DQ + FMA).
//
// sgemm: the driver of sgemm_impl.h (A packed when the range has >= 4 panels, B
// prefetch of the next panel pair) around a 12 x 32 register tile
// (tile_12x32_avx512): two B panels
// (one zmm each) x 12 rows = 24 zmm accumulators, 2 B loads + 12 broadcasts per
// k step. 24 independent FMA chains cover 2 ports x 4-cycle latency three times
// over, 14 loads per 24 FMAs stay under 2 loads/cycle, and 24 + 2 B + 1-2
// broadcast registers leave headroom in the 32 zmm (14 x 32 = 31 live registers
// would be the tightest fit; 12 avoids spills). An odd last panel runs the
// 12 x 16 variant; row tails use 11..1-row instantiations; columns >= n are
// handled with mask registers.
// sgemv: 4 rows of w in flight; x rows in groups of up to 4 (4 x 4 = 16
// accumulators), m == 1 uses 2 accumulators per w row; k walked in L1-sized
// chunks when m > 1, masked k tail, horizontal sums at the end.
// Testing: written on a machine without AVX-512, so never executed natively
// there. Compile-checked, objdump-inspected (no zmm spills in the tiles), and
// its logic run through the AVX2 file's checks (sgemm_ref / sgemv_ref and an
// f64 reference on awkward shapes, mid-matrix ranges, untouched-output and
// ASan checks) by compiling a copy with the _mm512 intrinsics replaced by a
// portable emulation. Re-run those checks on an AVX-512 host.
#include <immintrin.h>

#include <cassert>
#include <cstdint>
#include <cstdlib>

#include "../kernels.h"
#include "sgemm_impl.h"
#include "sgemv_impl.h"

// Keeps a value in a zmm register (an empty asm the compiler cannot see
// through). The emulated test build (native/test/emu) has no zmm registers.
#ifdef SPARQ_EMULATED_ISA
#define SPARQ_PIN_ZMM(v) ((void)0)
#else
#define SPARQ_PIN_ZMM(v) __asm__("" : "+v"(v))
#endif

namespace sparq {
namespace {


// Lanes [0, n) set; n <= 0 gives no lane (never a shift by a negative count).
inline __mmask16 lane_mask16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u); }

// ---------------------------------------------------------------------------
// sgemm micro-kernel: C[MR x 16*NP] (+)= A[MR x kc] * B[kc x 16*NP], where panel
// 1 starts bstride floats after panel 0. PACKED: a[p * MR + r]; otherwise
// a[r * lda + p]. init: C = acc (+ bias) instead of C += acc. ncols: valid
// columns of the tile (1 .. 16 * NP). The first npf k steps also prefetch one
// row of each next sub-panel (pf0, pf1).
template <int MR, int NP, bool PACKED>
void tile_12x32_avx512(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, int64_t bstride, float* c,
         int64_t ldc, bool init, const float* bias, int64_t ncols, const float* pf0, const float* pf1,
         int64_t npf) {
  static_assert(NP == 1 || NP == 2, "one or two panels");
  __m512 acc[MR][NP];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();

  const float* b1 = b + (NP == 2 ? bstride : 0);
  const auto step = [&](int64_t p) __attribute__((always_inline)) {
    __m512 bv[NP];
    bv[0] = _mm512_loadu_ps(b + p * 16);
    if (NP == 2) bv[NP - 1] = _mm512_loadu_ps(b1 + p * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(PACKED ? a[p * MR + r] : a[r * lda + p]);
#pragma GCC unroll 2
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(av, bv[q], acc[r][q]);
    }
  };
  int64_t p = 0;
#pragma GCC unroll 2
  for (; p < npf; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(pf0 + p * 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(pf1 + p * 16), _MM_HINT_T0);
    step(p);
  }
#pragma GCC unroll 2
  for (; p < kc; ++p) step(p);

  __mmask16 mk[NP];
  __m512 bv[NP];
#pragma GCC unroll 2
  for (int q = 0; q < NP; ++q) {
    mk[q] = lane_mask16(ncols - 16 * q);
    bv[q] = init && bias ? _mm512_maskz_loadu_ps(mk[q], bias + 16 * q) : _mm512_setzero_ps();
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) {
      const __m512 prev = init ? bv[q] : _mm512_maskz_loadu_ps(mk[q], cr + 16 * q);
      _mm512_mask_storeu_ps(cr + 16 * q, mk[q], _mm512_add_ps(acc[r][q], prev));
    }
  }
}

// Pack an R-row strip, k range [0, kc): ap[p * R + r] = a[r * lda + p].
// Rows in groups of 4 via 4x4 transposes (4 k values per step), the rest scalar.
template <int R>
inline void pack_strip_rows(const float* __restrict a, int64_t lda, int64_t kc, float* __restrict ap) {
  constexpr int R4 = R / 4 * 4;
  int64_t p = 0;
  for (; p + 4 <= kc; p += 4) {
    float* o = ap + p * R;
#pragma GCC unroll 4
    for (int r = 0; r < R4; r += 4) {
      __m128 v0 = _mm_loadu_ps(a + (r + 0) * lda + p);
      __m128 v1 = _mm_loadu_ps(a + (r + 1) * lda + p);
      __m128 v2 = _mm_loadu_ps(a + (r + 2) * lda + p);
      __m128 v3 = _mm_loadu_ps(a + (r + 3) * lda + p);
      _MM_TRANSPOSE4_PS(v0, v1, v2, v3);  // vq = column p + q of rows r..r+3
      _mm_storeu_ps(o + 0 * R + r, v0);
      _mm_storeu_ps(o + 1 * R + r, v1);
      _mm_storeu_ps(o + 2 * R + r, v2);
      _mm_storeu_ps(o + 3 * R + r, v3);
    }
#pragma GCC unroll 4
    for (int r = R4; r < R; ++r) {
      const float* ar = a + r * lda + p;
      o[0 * R + r] = ar[0];
      o[1 * R + r] = ar[1];
      o[2 * R + r] = ar[2];
      o[3 * R + r] = ar[3];
    }
  }
  for (; p < kc; ++p)
    for (int r = 0; r < R; ++r) ap[p * R + r] = a[r * lda + p];
}

// The register tile for the driver (sgemm_impl.h): 12 rows x two 16-column panels.
struct SgemmTile12x32Avx512 {
  static constexpr int kMR = 12, kNP = 2;
  static constexpr int64_t kKC = 256;  // k block: a pair of B sub-panels is 32 KiB
  static constexpr int64_t kMC = 144;  // row block: the packed A block is 144 KiB (L2)
  static constexpr int64_t kPackPanels = 4;  // packing pays once the block feeds two tile columns
  template <int MR, int NP, bool PACKED>
  static void tile(int64_t kc, const float* a, int64_t lda, const float* b, int64_t bstride, float* c, int64_t ldc, bool init,
                   const float* bias, int64_t ncols, const float* pf0, const float* pf1, int64_t npf) {
    tile_12x32_avx512<MR, NP, PACKED>(kc, a, lda, b, bstride, c, ldc, init, bias, ncols, pf0, pf1, npf);
  }
  template <int R>
  static void pack_strip(const float* a, int64_t lda, int64_t kc, float* ap) { pack_strip_rows<R>(a, lda, kc, ap); }
};

// ---------------------------------------------------------------------------
// sgemv (sgemv_impl.h) at the AVX-512 width: x rows in groups of 4 (4 x 4 = 16
// accumulators), then the remainder (3, 2 or 1 rows).
struct SgemvAvx512 {
  using F = __m512;
  using Mask = __mmask16;
  static constexpr int64_t kLanes = 16;
  static constexpr int kMaxGroup = 4;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static Mask tail(int64_t n) { return lane_mask16(n); }
  static F load_tail(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  template <int MR>
  static void pin(F& v) {
    if (MR > 1) SPARQ_PIN_ZMM(v);
  }
  // {sum v0, sum v1, sum v2, sum v3}
  static __m128 hsum4(F v0, F v1, F v2, F v3) {
    const __m256 h0 = _mm256_add_ps(_mm512_extractf32x8_ps(v0, 0), _mm512_extractf32x8_ps(v0, 1));
    const __m256 h1 = _mm256_add_ps(_mm512_extractf32x8_ps(v1, 0), _mm512_extractf32x8_ps(v1, 1));
    const __m256 h2 = _mm256_add_ps(_mm512_extractf32x8_ps(v2, 0), _mm512_extractf32x8_ps(v2, 1));
    const __m256 h3 = _mm256_add_ps(_mm512_extractf32x8_ps(v3, 0), _mm512_extractf32x8_ps(v3, 1));
    const __m256 s01 = _mm256_hadd_ps(h0, h1);  // a01 a23 b01 b23 | a45 a67 b45 b67
    const __m256 s23 = _mm256_hadd_ps(h2, h3);
    const __m256 s = _mm256_hadd_ps(s01, s23);  // a0123 b0123 c0123 d0123 | a4567 ...
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  }
  static __m128 load4(const float* p, int n) { return _mm_maskz_loadu_ps(__mmask8((1u << n) - 1u), p); }
  static void store4(float* p, int n, __m128 v) { _mm_mask_storeu_ps(p, __mmask8((1u << n) - 1u), v); }
  static int group(int64_t rem) { return rem >= 4 ? 4 : int(rem); }
};

}  // namespace

void sgemm_avx512(const SgemmArgs& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) { sgemm::run<SgemmTile12x32Avx512>(p, m0, m1, nb0, nb1); }

void sgemv_avx512(const SgemvArgs& p, int64_t n0, int64_t n1) { sgemv::run<SgemvAvx512>(p, n0, n1); }

}  // namespace sparq
