// sgemm_impl.h - the f32 GEMM driver, written once over a register tile's traits
// (instantiated by sgemm_avx2.cpp and sgemm_avx512.cpp with their own tiles).
//
// GotoBLAS-style loops: k blocks of kKC, row blocks of kMC; a row block of A is
// packed into a thread-local buffer (strips of kMR rows, k-major) when the range
// has >= kPackPanels panels (fewer run as fast straight from row-major A), and
// each strip prefetches its share of the next tile column's B sub-panels.
// Tiles are kMR rows x kNP panels of 16 columns; row tails run the 1 .. kMR - 1
// row instantiations and an odd last panel the one-panel tile.
//
// The traits (a struct named for its tile and ISA, e.g. SgemmTile6x16Avx2):
//   kMR, kNP, kKC, kMC, kPackPanels
//   template <int MR, int NP, bool PACKED> static void tile(kc, a, lda, b, bstride,
//       c, ldc, init, bias, ncols, pf0, pf1, npf): C[MR x 16 NP] (+)= A[MR x kc] B[kc x 16 NP]
//       (PACKED: a[p * MR + r], else a[r * lda + p]; panel 1 starts bstride floats after
//       panel 0; init: C = acc (+ bias); ncols valid columns; the first npf k steps
//       prefetch a row of pf0 and pf1)
//   template <int R> static void pack_strip(a, lda, kc, ap): ap[p * R + r] = a[r * lda + p]
//
// Every instantiation lives in its own translation unit with its ISA's flags; the
// traits are in an unnamed namespace there, so nothing here is shared across them.
#pragma once
#include <cassert>
#include <cstdint>
#include <cstdlib>

#include "../kernels.h"
#include "../rows.h"

namespace sparq {
namespace sgemm {

// One kMC x kKC packing buffer per thread and tile, allocated on first use and
// freed at thread exit; nullptr if the allocation failed (callers run unpacked).
template <class T>
float* pack_buffer() {
  struct Buf {
    float* p = nullptr;
    bool tried = false;
    ~Buf() { std::free(p); }
  };
  thread_local Buf b;
  if (!b.tried) {
    b.tried = true;
    b.p = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * T::kMC * T::kKC));
  }
  return b.p;
}

// Rows [0, mc) x cols [0, kc) of a into strips of kMR rows (the last strip has
// mc % kMR rows): the strip starting at row ir begins at ap + ir * kc.
template <class T>
void pack_a(const float* a, int64_t lda, int64_t mc, int64_t kc, float* ap) {
  for (int64_t ir = 0; ir < mc; ir += T::kMR, ap += T::kMR * kc) {
    const int64_t rows = mc - ir < T::kMR ? mc - ir : T::kMR;
    dispatch_rows<T::kMR>(rows, [&](auto R) { T::template pack_strip<decltype(R)::value>(a + ir * lda, lda, kc, ap); });
  }
}

template <class T>
void run(const SgemmArgs& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  static_assert(T::kNP == 1 || T::kNP == 2, "tiles of one or two panels");
  static_assert(T::kMC % T::kMR == 0, "a row block is a whole number of strips");
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
  float* ap = nb1 - nb0 >= T::kPackPanels ? pack_buffer<T>() : nullptr;
  for (int64_t pc = 0; pc < p.k; pc += T::kKC) {
    const int64_t kc = p.k - pc < T::kKC ? p.k - pc : T::kKC;
    const bool init = pc == 0 && !p.accumulate;
    for (int64_t ic = m0; ic < m1; ic += T::kMC) {
      const int64_t mc = m1 - ic < T::kMC ? m1 - ic : T::kMC;
      const float* ablk = p.a + ic * p.lda + pc;
      if (ap) pack_a<T>(ablk, p.lda, mc, kc, ap);
      for (int64_t nb = nb0; nb < nb1; nb += T::kNP) {
        const int np = nb1 - nb < T::kNP ? int(nb1 - nb) : T::kNP;
        const float* b = p.bp + (nb * p.k + pc) * 16;
        const int64_t ncols = p.n - nb * 16 < 16 * np ? p.n - nb * 16 : 16 * np;
        const float* bias = p.bias ? p.bias + nb * 16 : nullptr;
        float* cblk = p.c + ic * p.ldc + nb * 16;
        // each strip prefetches its share of the next tile column's B sub-panels
        const int64_t nnext = nb1 - (nb + np) < T::kNP ? nb1 - (nb + np) : T::kNP;
        const float* pf0 = nnext > 0 ? b + np * bstride : nullptr;
        const float* pf1 = nnext > 1 ? pf0 + bstride : pf0;
        const int64_t nstrips = (mc + T::kMR - 1) / T::kMR;
        const int64_t share = (kc + nstrips - 1) / nstrips;
        for (int64_t ir = 0, s = 0; ir < mc; ir += T::kMR, ++s) {
          const int64_t rows = mc - ir < T::kMR ? mc - ir : T::kMR;
          const int64_t lo = s * share < kc ? s * share : kc;
          const int64_t npf = !pf0 ? 0 : (kc - lo < share ? kc - lo : share);
          const float* q0 = pf0 ? pf0 + lo * 16 : nullptr;
          const float* q1 = pf1 ? pf1 + lo * 16 : nullptr;
          const float* as = ap ? ap + ir * kc : ablk + ir * p.lda;
          const int64_t lda = ap ? 0 : p.lda;
          float* cs = cblk + ir * p.ldc;
          dispatch_rows<T::kMR>(rows, [&](auto R) {
            constexpr int MR = decltype(R)::value;
            auto tile = [&](auto NP) {
              if (ap) T::template tile<MR, decltype(NP)::value, true>(kc, as, lda, b, bstride, cs, p.ldc, init, bias, ncols, q0, q1, npf);
              else T::template tile<MR, decltype(NP)::value, false>(kc, as, lda, b, bstride, cs, p.ldc, init, bias, ncols, q0, q1, npf);
            };
            if constexpr (T::kNP > 1) {
              if (np == 2) return tile(std::integral_constant<int, 2>{});
            }
            tile(std::integral_constant<int, 1>{});
          });
        }
      }
    }
  }
}

}  // namespace sgemm
}  // namespace sparq
