// gemm_s8_avx512_core.h - the AVX-512 VNNI int8 GEMM (vpdpbusd on zmm), shared
// by gemm_s8_avx512vnni.cpp (A as u8 = int8 + 128) and gemm_s8_amx.cpp (A as
// plain int8, for calls AMX handles poorly). Include only from files built
// with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma.
// Everything is in an anonymous namespace: each including file gets its own
// copy, so differing compile flags cannot mix through the linker.
//
// Register tile: 8 rows x 48 columns (3 packed n16k4 blocks) = 24 zmm int32
// accumulators. One k-step (4 k) = 3 zmm B loads (one cache line per block) +
// 8 dword broadcasts of A feeding 24 vpdpbusd (u8 x s8). Every accumulator
// starts at -128 * colsum of its (block, group), which undoes the +128 of the
// u8 A exactly (mod 2^32) at no cost in the k loop. With plain int8 A
// (kAU8 = false) the broadcast dword is xor'ed with 0x80808080 first, which is
// the same +128; it costs one ALU op per row per k-step, invisible in the
// memory-bound small-m calls it is meant for.
// Tails: 1..7-row tiles for the last rows, 1..2-block tiles for the last
// columns (4 blocks left: 2 + 2), masked stores so only columns j < b->n are
// written.
// Loop order: blocks of rows whose A fits in L2 (<= 512 KB), inside them
// 48-column panels of B, inside them the row tiles, so one B panel
// (48 x k_pad bytes) is reused from L1/L2 by every row tile; for m <= 8 (decode)
// B is streamed exactly once, with software prefetch ahead of each block stream.
// Groups > 1: 5 x 32 tiles whose int32 group sums and f32 totals both stay in
// registers (one fma per accumulator and group folds a group in).
#pragma once

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "gemm_s8_avx512_core.h needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../kernels.h"
#include "gemm_s8_ctx.h"

namespace sparq {
namespace {
namespace avx512_s8 {

#define SPARQ_INLINE inline __attribute__((always_inline))
#define SPARQ_LAMBDA __attribute__((always_inline))

constexpr int kMR = 8;                      // rows per register tile
constexpr int kNB = 3;                      // 16-column blocks per register tile
constexpr int64_t kPrefetch = 1024;         // bytes ahead in each B block stream (16 k-steps)
constexpr int64_t kABlockBytes = 512 << 10;  // rows per outer block: A block <= this

// Columns nb*16 .. nb*16+15 that exist (j < n). The contract passes only blocks
// below s8_blocks(b), so v is in [1, 16]; a block past n still gets an empty
// mask (nothing written, no bias read) rather than a shift by a negative count.
SPARQ_INLINE __mmask16 col_mask(int64_t n, int64_t nb) {
  const int64_t v = n - nb * kS8BlockN;
  return v >= kS8BlockN ? __mmask16(0xFFFF) : v <= 0 ? __mmask16(0) : __mmask16((1u << v) - 1u);
}

// int32 -> f32 (vcvtdq2ps). The all-ones maskz form sidesteps a GCC 12 false
// -Wuninitialized on _mm512_undefined_ps() inside _mm512_cvtepi32_ps.
SPARQ_INLINE __m512 to_f32(__m512i v) { return _mm512_maskz_cvtepi32_ps(__mmask16(0xFFFF), v); }

// 4 A bytes at p broadcast to every dword, as u8 (plain int8 gets +128 = xor 0x80).
template <bool kAU8>
SPARQ_INLINE __m512i bcast_a(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (kAU8) {
    return _mm512_set1_epi32(v);  // vpbroadcastd zmm, m32
  } else {
    return _mm512_xor_si512(_mm512_set1_epi32(v), _mm512_set1_epi32(int32_t(0x80808080u)));
  }
}

// Compile-time loop: f(std::integral_constant<int, 0>{}) ... f(<N-1>). Every
// accumulator index is a constant from the start, so GCC keeps the tile in
// registers (runtime loops + #pragma unroll left it in memory).
template <typename F, int... I>
SPARQ_INLINE void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
SPARQ_INLINE void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

// Row R of the tile: p = row 0 and p4 = row 4 at the current k, l3 = 3 * lda,
// so every row is a base + index*scale address (few live pointers).
template <int R>
SPARQ_INLINE const uint8_t* arow(const uint8_t* p, const uint8_t* p4, int64_t lda, int64_t l3) {
  const uint8_t* base = R < 4 ? p : p4;
  constexpr int r = R & 3;
  return r == 0 ? base : r == 1 ? base + lda : r == 2 ? base + 2 * lda : base + l3;
}

// acc[r][c] = sum over the k-steps of group g of A(row i0 + r) . B(block nb + c),
// starting from -128 * colsum[nb + c, g] (u8 shift compensation).
// Group g covers k-steps [g * gsteps, min((g + 1) * gsteps, k_pad / 4)).
template <bool kAU8, int MR, int NB>
SPARQ_INLINE void accumulate(const Ctx& x, __m512i (&acc)[MR][NB], int64_t i0, int64_t nb, int64_t g) {
  const int64_t lda = x.lda, l3 = 3 * lda, bs = x.bstride;
  const int64_t s0 = g * x.gsteps;
  const int64_t nsteps = std::min(x.gsteps, x.ksteps - s0);
  static_for<NB>([&](auto c) SPARQ_LAMBDA {
    const __m512i cs = _mm512_loadu_si512(x.colsum + s8_group_index(nb + c, g, x.groups));
    const __m512i init = _mm512_mullo_epi32(cs, _mm512_set1_epi32(-128));
    static_for<MR>([&](auto r) SPARQ_LAMBDA { acc[r][c] = init; });
  });
  const uint8_t* p = x.a + i0 * lda + s0 * kS8StepK;
  const uint8_t* p4 = MR > 4 ? p + 4 * lda : p;
  const int8_t* bp = x.b + nb * bs + s0 * kS8BlockBytes;
  for (int64_t s = nsteps; s > 0; --s) {
    __m512i bv[NB];
    static_for<NB>([&](auto c) SPARQ_LAMBDA {
      bv[c] = _mm512_loadu_si512(bp + c * bs);
      _mm_prefetch(reinterpret_cast<const char*>(bp + c * bs + kPrefetch), _MM_HINT_T0);
    });
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      const __m512i av = bcast_a<kAU8>(arow<r>(p, p4, lda, l3));
      static_for<NB>([&](auto c) SPARQ_LAMBDA { acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, bv[c]); });
    });
    p += kS8StepK;
    p4 += kS8StepK;
    bp += kS8BlockBytes;
  }
}

// Runs accumulate() and parks the int32 tile in buf. The epilogues read it back
// from L1: with 24 accumulators still live there, GCC 12 spills them inside
// the k loop (a store per vpdpbusd); the empty asm keeps it from forwarding
// the stores and recreating that pressure. Cost: 2*MR*NB L1 accesses per tile.
template <bool kAU8, int MR, int NB>
SPARQ_INLINE void accumulate_to(const Ctx& x, int32_t (&buf)[MR][NB][kS8BlockN], int64_t i0, int64_t nb,
                                int64_t g) {
  __m512i acc[MR][NB];
  accumulate<kAU8, MR, NB>(x, acc, i0, nb, g);
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    static_for<NB>([&](auto c) SPARQ_LAMBDA { _mm512_store_si512(buf[r][c], acc[r][c]); });
  });
  asm volatile("" : : "r"(&buf[0][0][0]) : "memory");
}

// One MR x (16*NB) tile at rows [i0, i0+MR), blocks [nb, nb+NB), groups == 1
// (exact int32, or f32 with one scale per column).
template <bool kAU8, int MR, int NB>
void tile_one_group(const Ctx& x, int64_t i0, int64_t nb) {
  alignas(64) int32_t acc[MR][NB][kS8BlockN];
  accumulate_to<kAU8, MR, NB>(x, acc, i0, nb, 0);
  __mmask16 mask[NB];
  static_for<NB>([&](auto c) SPARQ_LAMBDA { mask[c] = col_mask(x.n, nb + c); });
  if (x.ci) {
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      int32_t* out = x.ci + (i0 + r) * x.ldc + nb * kS8BlockN;
      static_for<NB>([&](auto c) SPARQ_LAMBDA {
        _mm512_mask_storeu_epi32(out + c * kS8BlockN, mask[c], _mm512_load_si512(acc[r][c]));
      });
    });
    return;
  }
  // Same order of operations as the reference: (acc * scale) * a_scale + bias.
  __m512 sc[NB], bi[NB];
  static_for<NB>([&](auto c) SPARQ_LAMBDA {
    sc[c] = _mm512_loadu_ps(x.scales + s8_group_index(nb + c, 0, x.groups));
    bi[c] = x.bias ? _mm512_maskz_loadu_ps(mask[c], x.bias + (nb + c) * kS8BlockN) : _mm512_setzero_ps();
  });
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    const __m512 as = _mm512_set1_ps(x.a_scale[i0 + r]);
    float* out = x.c + (i0 + r) * x.ldc + nb * kS8BlockN;
    static_for<NB>([&](auto c) SPARQ_LAMBDA {
      __m512 v = _mm512_mul_ps(to_f32(_mm512_load_si512(acc[r][c])), sc[c]);
      v = _mm512_add_ps(_mm512_mul_ps(v, as), bi[c]);
      _mm512_mask_storeu_ps(out + c * kS8BlockN, mask[c], v);
    });
  });
}

// groups > 1 (f32 only): an MR x (16*NB) tile, MR <= 5, NB <= 2, keeps both its
// int32 group sums and its f32 totals in registers (2 * MR * NB zmm: 20 at 5 x 2,
// with 2 for B, 2 for the group's starting values and 1 for A), and folds each
// group in with one fma per accumulator: total += float(acc_g) * scale[g].
// Measured against the other shapes on Zen 5 (m = 128, n = k = 4096, group 32,
// x per-channel time): parking an 8 x 48 tile in L1 per group 1.73, 8 x 48 with
// the totals in L1 1.64, 4 x 48 in registers 1.31, 6 x 32 in registers 1.2-1.3.
// 6 x 32 needs 28 zmm plus temporaries, and GCC spilled 2 totals and 2 group
// sums per group; 5 x 32 spills no zmm register (m = 512, 8192 x 2048, 2 threads, 4-6
// alternations: Q4_0 x16 17.3-17.7 -> 16.5-17.1 ms, Q8_0 18.6-18.7 -> 17.5-17.9,
// Q4_K within noise). Groups cover k in [g*group, (g+1)*group); k >=
// groups*group is zero padding in both A and B.
constexpr int kMRG = 5, kNBG = 2;

// GCC 12 copied every accumulator between registers on each k-step of this
// loop nest when vpdpbusd came through the intrinsic: the asm form ties the
// accumulator to its register, and the pin keeps the totals in theirs. The
// emulated build (native/test/emu) has no zmm registers and uses the intrinsic.
// (Functions, not macros: clang 14 does not capture a variable into a lambda when
// only an asm statement uses it.)
SPARQ_INLINE void dpbusd_tied(__m512i& acc, __m512i a, __m512i b) {
#ifdef SPARQ_EMULATED_ISA
  acc = _mm512_dpbusd_epi32(acc, a, b);
#else
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#endif
}
SPARQ_INLINE void pin_zmm(__m512& v) {
#ifndef SPARQ_EMULATED_ISA
  __asm__("" : "+v"(v));
#else
  (void)v;
#endif
}

// kAG: per-row group scales of A (a_gscale) are present (a template flag, not a
// test per group and row); a group of exactly kG8 k-steps (32 values: Q4_0,
// Q4_K, Q8_0 ...) runs fully unrolled.
constexpr int64_t kG8 = 8;
template <bool kAU8, bool kAG, int MR, int NB>
void tile_groups(const Ctx& x, int64_t i0, int64_t nb) {
  static_assert(MR <= kMRG, "grouped tiles have at most kMRG rows");
  __m512 sum[MR][NB];
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    static_for<NB>([&](auto c) SPARQ_LAMBDA { sum[r][c] = _mm512_setzero_ps(); });
  });
  const int64_t lda = x.lda, bs = x.bstride;
  const float* ag = kAG ? x.a_gscale + i0 * x.groups : nullptr;
  for (int64_t g = 0; g < x.groups; ++g) {
    const int64_t s0 = g * x.gsteps;
    const int64_t nsteps = std::min(x.gsteps, x.ksteps - s0);  // >= 1: every group starts inside k_pad
    const uint8_t* p = x.a + i0 * lda + s0 * kS8StepK;
    const int8_t* bp = x.b + nb * bs + s0 * kS8BlockBytes;
    __m512i acc[MR][NB], bv[NB], init[NB];
    // the first k-step starts from -128 * colsum, so every accumulator is a value of its own
    static_for<NB>([&](auto c) SPARQ_LAMBDA {
      bv[c] = _mm512_loadu_si512(bp + c * bs);
      init[c] = _mm512_mullo_epi32(_mm512_loadu_si512(x.colsum + s8_group_index(nb + c, g, x.groups)),
                                   _mm512_set1_epi32(-128));
    });
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      const __m512i av = bcast_a<kAU8>(p + r * lda);
      static_for<NB>([&](auto c) SPARQ_LAMBDA { acc[r][c] = _mm512_dpbusd_epi32(init[c], av, bv[c]); });
    });
    // one k-step at offset st (A bytes st * 4, B blocks st * 64 bytes on)
    const auto step = [&](int64_t st) SPARQ_LAMBDA {
      static_for<NB>([&](auto c) SPARQ_LAMBDA {
        bv[c] = _mm512_loadu_si512(bp + st * kS8BlockBytes + c * bs);
        _mm_prefetch(reinterpret_cast<const char*>(bp + st * kS8BlockBytes + c * bs + kPrefetch), _MM_HINT_T0);
      });
      static_for<MR>([&](auto r) SPARQ_LAMBDA {
        const __m512i av = bcast_a<kAU8>(p + st * kS8StepK + r * lda);
        static_for<NB>([&](auto c) SPARQ_LAMBDA { dpbusd_tied(acc[r][c], av, bv[c]); });
      });
    };
    for (int64_t st = 1; st < nsteps; ++st) step(st);
    static_for<NB>([&](auto c) SPARQ_LAMBDA {
      const __m512 sc = _mm512_loadu_ps(x.scales + s8_group_index(nb + c, g, x.groups));
      static_for<MR>([&](auto r) SPARQ_LAMBDA {
        const __m512 t = kAG ? _mm512_mul_ps(sc, _mm512_set1_ps(ag[r * x.groups + g])) : sc;
        sum[r][c] = _mm512_fmadd_ps(to_f32(acc[r][c]), t, sum[r][c]);
        pin_zmm(sum[r][c]);
      });
    });
  }
  static_for<NB>([&](auto c) SPARQ_LAMBDA {
    const __mmask16 mask = col_mask(x.n, nb + c);
    const __m512 bi = x.bias ? _mm512_maskz_loadu_ps(mask, x.bias + (nb + c) * kS8BlockN) : _mm512_setzero_ps();
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      const __m512 v = _mm512_mul_ps(sum[r][c], _mm512_set1_ps(x.a_scale[i0 + r]));
      _mm512_mask_storeu_ps(x.c + (i0 + r) * x.ldc + (nb + c) * kS8BlockN, mask, _mm512_add_ps(v, bi));
    });
  });
}

using TileFn = void (*)(const Ctx&, int64_t, int64_t);

#define SPARQ_TILE_ROW(F, MR) {&F<kAU8, MR, 1>, &F<kAU8, MR, 2>, &F<kAU8, MR, 3>}
// [rows - 1][blocks - 1]
template <bool kAU8>
const TileFn kTiles[kMR][kNB] = {SPARQ_TILE_ROW(tile_one_group, 1), SPARQ_TILE_ROW(tile_one_group, 2),
                                 SPARQ_TILE_ROW(tile_one_group, 3), SPARQ_TILE_ROW(tile_one_group, 4),
                                 SPARQ_TILE_ROW(tile_one_group, 5), SPARQ_TILE_ROW(tile_one_group, 6),
                                 SPARQ_TILE_ROW(tile_one_group, 7), SPARQ_TILE_ROW(tile_one_group, 8)};
template <bool kAU8, bool kAG>
#define SPARQ_G(MR) {&tile_groups<kAU8, kAG, MR, 1>, &tile_groups<kAU8, kAG, MR, 2>}
const TileFn kTilesGrouped[kMRG][kNBG] = {SPARQ_G(1), SPARQ_G(2), SPARQ_G(3), SPARQ_G(4), SPARQ_G(5)};
#undef SPARQ_G
#undef SPARQ_TILE_ROW
#undef SPARQ_INLINE
#undef SPARQ_LAMBDA

// The whole contract of gemm_s8_ref (kernels.h) for rows [m0, m1) x blocks
// [nb0, nb1); kAU8: A bytes are int8 + 128 (else plain int8).
template <bool kAU8>
void run(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  const PackedS8& b = *p.b;
  const Ctx x = make_ctx(p, m0, m1, nb0, nb1);
  nb1 = std::min(nb1, s8_blocks(b));  // release builds clamp what the asserts check
  if (m0 >= m1 || nb0 >= nb1) return;

  const int64_t rows = x.grouped ? kMRG : kMR;  // rows per register tile
  const int64_t mc = std::max<int64_t>(rows, kABlockBytes / b.k_pad / rows * rows);
  for (int64_t ib = m0; ib < m1; ib += mc) {
    const int64_t ie = std::min(m1, ib + mc);
    for (int64_t nb = nb0, nbc = 0; nb < nb1; nb += nbc) {
      // 4 blocks left (e.g. a 4-block driver task): 2 + 2 (16 accumulators each)
      // rather than 3 + 1, whose 8 chains cannot hide the vpdpbusd latency.
      const int64_t left = nb1 - nb;
      nbc = x.grouped ? std::min<int64_t>(kNBG, left) : left == 4 ? 2 : std::min<int64_t>(kNB, left);
      for (int64_t i = ib; i < ie; i += rows) {
        const int64_t mr = std::min<int64_t>(rows, ie - i);
        (x.grouped ? (x.a_gscale ? kTilesGrouped<kAU8, true> : kTilesGrouped<kAU8, false>)[mr - 1][nbc - 1]
                   : kTiles<kAU8>[mr - 1][nbc - 1])(x, i, nb);
      }
    }
  }
}

}  // namespace avx512_s8
}  // namespace
}  // namespace sparq
