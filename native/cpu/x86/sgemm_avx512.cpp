// sgemm_avx512.cpp - f32 GEMM (packed-B, 16-column panels) and row-dot GEMV for
// AVX-512 (F/BW/VL/DQ + FMA).
//
// sgemm: same structure as sgemm_avx2.cpp (k blocks of kKC, row blocks of kMC,
// A packed into a thread-local buffer when the range has >= 4 panels, B
// prefetch of the next panel pair) around a 12 x 32 register tile: two B panels
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

constexpr int kMR = 12;       // rows per register tile
constexpr int64_t kKC = 256;  // k block: a pair of B sub-panels is 32 KiB
constexpr int64_t kMC = 144;  // row block: the packed A block is 144 KiB (L2)
static_assert(kMC % kMR == 0, "row block is a whole number of strips");

// Lanes [0, n) set; n <= 0 gives no lane (never a shift by a negative count).
inline __mmask16 lane_mask16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u); }

// ---------------------------------------------------------------------------
// sgemm micro-kernel: C[MR x 16*NP] (+)= A[MR x kc] * B[kc x 16*NP], where panel
// 1 starts bstride floats after panel 0. PACKED: a[p * MR + r]; otherwise
// a[r * lda + p]. init: C = acc (+ bias) instead of C += acc. ncols: valid
// columns of the tile (1 .. 16 * NP). The first npf k steps also prefetch one
// row of each next sub-panel (pf0, pf1).
template <int MR, int NP, bool PACKED>
void ukr(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, int64_t bstride, float* c,
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

template <int NP, bool PACKED>
void ukr_rows(int64_t rows, int64_t kc, const float* a, int64_t lda, const float* b, int64_t bstride, float* c,
              int64_t ldc, bool init, const float* bias, int64_t ncols, const float* pf0, const float* pf1,
              int64_t npf) {
#define SPARQ_UKR(R) \
  case R: ukr<R, NP, PACKED>(kc, a, lda, b, bstride, c, ldc, init, bias, ncols, pf0, pf1, npf); break
  switch (rows) {
    SPARQ_UKR(12);
    SPARQ_UKR(11);
    SPARQ_UKR(10);
    SPARQ_UKR(9);
    SPARQ_UKR(8);
    SPARQ_UKR(7);
    SPARQ_UKR(6);
    SPARQ_UKR(5);
    SPARQ_UKR(4);
    SPARQ_UKR(3);
    SPARQ_UKR(2);
    SPARQ_UKR(1);
    default: assert(false && "rows in [1, 12]");
  }
#undef SPARQ_UKR
}

// Pack an R-row strip, k range [0, kc): ap[p * R + r] = a[r * lda + p].
// Rows in groups of 4 via 4x4 transposes (4 k values per step), the rest scalar.
template <int R>
inline void pack_strip(const float* __restrict a, int64_t lda, int64_t kc, float* __restrict ap) {
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

// Pack rows [0, mc) x cols [0, kc) into strips of kMR rows (the last strip has
// mc % kMR rows): the strip starting at row ir begins at ap + ir * kc.
void pack_a(const float* a, int64_t lda, int64_t mc, int64_t kc, float* ap) {
  for (int64_t ir = 0; ir < mc; ir += kMR, ap += kMR * kc) {
    const int64_t rows = mc - ir < kMR ? mc - ir : kMR;
    const float* as = a + ir * lda;
#define SPARQ_PACK(R) \
  case R: pack_strip<R>(as, lda, kc, ap); break
    switch (rows) {
      SPARQ_PACK(12);
      SPARQ_PACK(11);
      SPARQ_PACK(10);
      SPARQ_PACK(9);
      SPARQ_PACK(8);
      SPARQ_PACK(7);
      SPARQ_PACK(6);
      SPARQ_PACK(5);
      SPARQ_PACK(4);
      SPARQ_PACK(3);
      SPARQ_PACK(2);
      default: pack_strip<1>(as, lda, kc, ap); break;
    }
#undef SPARQ_PACK
  }
}

// One kMC x kKC packing buffer per thread, allocated on first use and freed at
// thread exit. nullptr if the allocation failed (callers then run unpacked).
struct PackBuf {
  float* p = nullptr;
  bool tried = false;
  ~PackBuf() { std::free(p); }
  float* get() {
    if (!tried) {
      tried = true;
      p = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kMC * kKC));
    }
    return p;
  }
};
thread_local PackBuf t_pack;

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

void sgemm_avx512(const SgemmArgs& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  assert(0 <= m0 && m0 <= m1 && m1 <= p.m);
  assert(0 <= nb0 && nb0 <= nb1 && nb1 <= (p.n + 15) / 16);
  assert(p.k >= 0 && (p.m <= 1 || (p.lda >= p.k && p.ldc >= p.n)));
  // the asserts are the contract (checked builds); release builds clamp, so a bad
  // range computes less instead of touching memory past the logical [m, n]
  m1 = m1 < p.m ? m1 : p.m;
  nb1 = nb1 < (p.n + 15) / 16 ? nb1 : (p.n + 15) / 16;
  if (m0 >= m1 || nb0 >= nb1) return;
  assert(p.c && (p.k == 0 || (p.a && p.bp)));
  assert(!p.accumulate || !p.bias);

  if (p.k == 0) {  // c = bias (or 0); unchanged when accumulating
    if (p.accumulate) return;
    for (int64_t i = m0; i < m1; ++i)
      for (int64_t j = nb0 * 16; j < nb1 * 16 && j < p.n; ++j) p.c[i * p.ldc + j] = p.bias ? p.bias[j] : 0.f;
    return;
  }

  const int64_t bstride = p.k * 16;  // floats between consecutive panels
  // Packing pays off once the A block is reused by several panels (the AVX2
  // path measured the break-even at ~3 panels; 4 = two register-tile columns).
  float* ap = nb1 - nb0 >= 4 ? t_pack.get() : nullptr;
  for (int64_t pc = 0; pc < p.k; pc += kKC) {
    const int64_t kc = p.k - pc < kKC ? p.k - pc : kKC;
    const bool init = pc == 0 && !p.accumulate;
    for (int64_t ic = m0; ic < m1; ic += kMC) {
      const int64_t mc = m1 - ic < kMC ? m1 - ic : kMC;
      const float* ablk = p.a + ic * p.lda + pc;
      if (ap) pack_a(ablk, p.lda, mc, kc, ap);
      for (int64_t nb = nb0; nb < nb1; nb += 2) {
        const int np = nb + 1 < nb1 ? 2 : 1;
        const float* b = p.bp + (nb * p.k + pc) * 16;
        const int64_t ncols = p.n - nb * 16 < 16 * np ? p.n - nb * 16 : 16 * np;
        const float* bias = p.bias ? p.bias + nb * 16 : nullptr;
        float* cblk = p.c + ic * p.ldc + nb * 16;
        // Each strip prefetches its share of the next tile column's B sub-panels.
        const int64_t nnext = nb1 - (nb + np) < 2 ? nb1 - (nb + np) : 2;
        const float* pf0 = nnext > 0 ? b + np * bstride : nullptr;
        const float* pf1 = nnext > 1 ? pf0 + bstride : pf0;
        const int64_t nstrips = (mc + kMR - 1) / kMR;
        const int64_t share = (kc + nstrips - 1) / nstrips;
        for (int64_t ir = 0, s = 0; ir < mc; ir += kMR, ++s) {
          const int64_t rows = mc - ir < kMR ? mc - ir : kMR;
          const int64_t lo = s * share < kc ? s * share : kc;
          const int64_t npf = !pf0 ? 0 : (kc - lo < share ? kc - lo : share);
          const float* q0 = pf0 ? pf0 + lo * 16 : nullptr;
          const float* q1 = pf1 ? pf1 + lo * 16 : nullptr;
          const float* as = ap ? ap + ir * kc : ablk + ir * p.lda;
          float* cs = cblk + ir * p.ldc;
          if (np == 2) {
            if (ap)
              ukr_rows<2, true>(rows, kc, as, 0, b, bstride, cs, p.ldc, init, bias, ncols, q0, q1, npf);
            else
              ukr_rows<2, false>(rows, kc, as, p.lda, b, bstride, cs, p.ldc, init, bias, ncols, q0, q1, npf);
          } else {
            if (ap)
              ukr_rows<1, true>(rows, kc, as, 0, b, bstride, cs, p.ldc, init, bias, ncols, q0, q1, npf);
            else
              ukr_rows<1, false>(rows, kc, as, p.lda, b, bstride, cs, p.ldc, init, bias, ncols, q0, q1, npf);
          }
        }
      }
    }
  }
}

void sgemv_avx512(const SgemvArgs& p, int64_t n0, int64_t n1) { sgemv::run<SgemvAvx512>(p, n0, n1); }

}  // namespace sparq
