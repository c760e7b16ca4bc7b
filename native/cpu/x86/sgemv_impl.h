// sgemv_impl.h - the f32 GEMV (y[m, n] = x[m, k] . W[n, k]^T + bias, W's rows
// read in place) written once for every vector width. sgemm_avx2.cpp and
// sgemm_avx512.cpp instantiate it with their traits V:
//   V::F, V::kLanes (floats per vector), V::Mask (a k-tail mask), V::zero(),
//   V::load(p), V::tail(n) (the first n lanes), V::load_tail(p, mask) (zeros
//   past it, nothing read there), V::fmadd, V::add, V::pin(v) (keeps a loaded
//   w in a register), V::hsum4(v0..v3) -> {sum v0, .., sum v3}, V::load4(p, n)
//   and V::store4(p, n, v) (n <= 4 floats), V::group(rows left) (x rows per
//   tile: AVX2 groups of 3 (4 rows go as 2 + 2), AVX-512 groups of 4) and
//   V::kMaxGroup.
// A tile is MR x rows by NB (<= 4) w rows with U accumulators per (i, j) pair
// (k unrolled by kLanes * U). m == 1 streams w once in a single pass. For m > 1
// the NB w rows are walked in k chunks of kKV (4 x 2 KiB, L1) and every x-row
// group of the (at most kMV-row) super-group runs over the chunk before moving
// on, so w comes from DRAM once and from L1 otherwise; the accumulators of each
// group are parked in a small stack array between chunks.
#pragma once
#include <immintrin.h>

#include <cassert>
#include <cstdint>

#include "../kernels.h"

namespace sparq {
namespace sgemv {

constexpr int64_t kKV = 512;  // k chunk (a multiple of every width)
constexpr int64_t kMV = 12;   // x rows per super-group
static_assert(kKV % 16 == 0, "chunks other than the last have no k tail");

// Accumulates k range [p0, p1) (p1 - p0 may have a tail only in the last chunk).
// st: MR * NB * U parked accumulators, read when load_st. If c != nullptr the
// sums (+ bias) are written to c[r * ldc + j], otherwise parked in st.
template <class V, int MR, int NB, int U>
void tile(const float* __restrict x, int64_t ldx, const float* __restrict w, int64_t ldw, int64_t p0, int64_t p1,
          typename V::F* st, bool load_st, const float* bias, float* c, int64_t ldc) {
  using F = typename V::F;
  constexpr int64_t L = V::kLanes;
  F acc[MR][NB][U];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j)
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) acc[r][j][u] = load_st ? st[(r * NB + j) * U + u] : V::zero();

  int64_t p = p0;
  for (; p + L * U <= p1; p += L * U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      F xv[MR];
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) xv[r] = V::load(x + r * ldx + p + L * u);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        F wv = V::load(w + j * ldw + p + L * u);
        // Load w once into a register: GCC otherwise re-loads it as a memory
        // operand of each of the MR FMAs (10 instead of 6 loads for MR = 2).
        V::template pin<MR>(wv);
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) acc[r][j][u] = V::fmadd(xv[r], wv, acc[r][j][u]);
      }
    }
  }
  if (U > 1) {
    for (; p + L <= p1; p += L) {
      F xv[MR];
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) xv[r] = V::load(x + r * ldx + p);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        const F wv = V::load(w + j * ldw + p);
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) acc[r][j][0] = V::fmadd(xv[r], wv, acc[r][j][0]);
      }
    }
  }
  if (p < p1) {  // k tail: masked lanes are not read and load as zero
    const typename V::Mask km = V::tail(p1 - p);
    F xv[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) xv[r] = V::load_tail(x + r * ldx + p, km);
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const F wv = V::load_tail(w + j * ldw + p, km);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) acc[r][j][0] = V::fmadd(xv[r], wv, acc[r][j][0]);
    }
  }

  if (!c) {
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) st[(r * NB + j) * U + u] = acc[r][j][u];
    return;
  }
  const __m128 bv = bias ? V::load4(bias, NB) : _mm_setzero_ps();
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    F v[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      if (j < NB) {
        v[j] = acc[r][j][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; ++u) v[j] = V::add(v[j], acc[r][j][u]);
      } else {
        v[j] = V::zero();
      }
    }
    V::store4(c + r * ldc, NB, _mm_add_ps(V::hsum4(v[0], v[1], v[2], v[3]), bv));
  }
}

// Columns [j, j + NB) for all m rows.
template <class V, int NB>
void cols(const SgemvArgs& p, int64_t j) {
  const float* w = p.w + j * p.ldw;
  const float* bias = p.bias ? p.bias + j : nullptr;
  if (p.m == 1) {
    tile<V, 1, NB, 2>(p.x, p.ldx, w, p.ldw, 0, p.k, nullptr, false, bias, p.c + j, p.ldc);
    return;
  }
  typename V::F st[kMV * NB * 2];
  for (int64_t i0 = 0; i0 < p.m; i0 += kMV) {
    const int64_t rows = p.m - i0 < kMV ? p.m - i0 : kMV;
    int64_t pc = 0;
    do {
      const int64_t p1 = p.k - pc < kKV ? p.k : pc + kKV;
      const bool last = p1 == p.k;
      typename V::F* sg = st;
      for (int64_t i = i0, rem = rows; rem > 0;) {
        const int g = V::group(rem);
        const float* x = p.x + i * p.ldx;
        float* c = last ? p.c + i * p.ldc + j : nullptr;
        switch (g) {
          case 4:
            if constexpr (V::kMaxGroup >= 4) tile<V, 4, NB, 1>(x, p.ldx, w, p.ldw, pc, p1, sg, pc > 0, bias, c, p.ldc);
            break;
          case 3: tile<V, 3, NB, 1>(x, p.ldx, w, p.ldw, pc, p1, sg, pc > 0, bias, c, p.ldc); break;
          case 2: tile<V, 2, NB, 1>(x, p.ldx, w, p.ldw, pc, p1, sg, pc > 0, bias, c, p.ldc); break;
          default: tile<V, 1, NB, 2>(x, p.ldx, w, p.ldw, pc, p1, sg, pc > 0, bias, c, p.ldc); break;
        }
        sg += (g == 1 ? 2 : g) * NB;  // one row keeps two accumulators per w row
        i += g;
        rem -= g;
      }
      pc = p1;
    } while (pc < p.k);
  }
}

// Columns [n0, n1): 4 w rows at a time, then the 3, 2 or 1 left.
template <class V>
void run(const SgemvArgs& p, int64_t n0, int64_t n1) {
  assert(0 <= n0 && n0 <= n1 && n1 <= p.n);
  assert(p.m >= 0 && p.k >= 0 && (n1 - n0 <= 1 || p.ldw >= p.k));
  assert(p.m <= 1 || (p.ldx >= p.k && p.ldc >= p.n));
  n1 = n1 < p.n ? n1 : p.n;  // release builds clamp what the asserts check
  if (n0 >= n1 || p.m == 0) return;
  assert(p.c && (p.k == 0 || (p.x && p.w)));
  int64_t j = n0;
  for (; j + 4 <= n1; j += 4) cols<V, 4>(p, j);
  switch (n1 - j) {
    case 3: cols<V, 3>(p, j); break;
    case 2: cols<V, 2>(p, j); break;
    case 1: cols<V, 1>(p, j); break;
    default: break;
  }
}

}  // namespace sgemv
}  // namespace sparq
