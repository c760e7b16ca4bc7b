// gemm_s8_avxvnni.cpp - int8 GEMM micro-kernel for AVX-VNNI (VEX vpdpbusd on
// ymm: Alder Lake / Raptor Lake / Meteor Lake / Arrow Lake, Sierra Forest).
// Built with -mavx2 -mfma -mavxvnni.
//
// Register tile: 6 rows x 16 columns (one packed n16k4 block) = 12 ymm int32
// accumulators (2 per row: columns 0-7 = bytes 0..31 of a k-step, 8-15 =
// bytes 32..63). One k-step (4 k) = 2 ymm B loads + 6 dword broadcasts of A
// feeding 12 vpdpbusd; 15 of the 16 ymm registers are live in the loop.
// A is u8 (int8 + 128, table entry a_u8); every accumulator starts at
// -128 * colsum of its (block, group), which undoes the shift exactly (mod 2^32).
// Tails: 1..5-row tiles for the last rows; a block with fewer than 16 valid
// columns (j >= b->n) is written through a 16-wide stack buffer, so nothing
// past column n - 1 is touched (AVX2 has no cheap masked store).
// Loop order: blocks of rows whose A fits in L2 (<= 256 KB), inside them one
// 16-column block of B, inside it the row tiles, so the block (16 x k_pad bytes)
// is reused from L1/L2 by every row tile; for m <= 6 (decode) B is streamed
// exactly once, with software prefetch ahead.
// Groups > 1: 6 x 16 tiles whose int32 group sums stay in registers; one fma per
// accumulator and group folds a group into f32 totals in L1.
//
// Testing: native/test/test_kernels --isa avxvnni (matmul_s8 exact int32 and
// linear_s8 f32 against independent references; exit 77 = skipped on CPUs
// without the ISA); gemm_s8_ref is the contract's oracle. Not run on real
// AVX-VNNI hardware when written: it was checked against gemm_s8_ref with an
// emulated vpdpbusd (exact ints bit for bit, f32 to rounding) over row tails,
// n % 16 != 0, groups 16/32/64/128/256/k_pad, bias on/off, lda > k_pad,
// ldc > n and random [m0,m1) x [nb0,nb1) sub-ranges.
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

#define SPARQ_INLINE inline __attribute__((always_inline))
#define SPARQ_LAMBDA __attribute__((always_inline))

constexpr int kMR = 6;                      // rows per register tile
constexpr int64_t kPrefetch = 1024;         // bytes ahead in the B block stream (16 k-steps)
constexpr int64_t kABlockBytes = 256 << 10;  // rows per outer block: A block <= this

// Compile-time loop: f(std::integral_constant<int, 0>{}) ... f(<N-1>), so every
// accumulator index is a constant and the tile stays in registers.
template <typename F, int... I>
SPARQ_INLINE void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
SPARQ_INLINE void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

SPARQ_INLINE __m256i bcast_a(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);  // vpbroadcastd ymm, m32
}

// Row R of the tile: p = row 0 and p4 = row 4 at the current k, l3 = 3 * lda.
template <int R>
SPARQ_INLINE const uint8_t* arow(const uint8_t* p, const uint8_t* p4, int64_t lda, int64_t l3) {
  const uint8_t* base = R < 4 ? p : p4;
  constexpr int r = R & 3;
  return r == 0 ? base : r == 1 ? base + lda : r == 2 ? base + 2 * lda : base + l3;
}

// buf[r][0..16) = sum over the k-steps of group g of A(row i0 + r) . B(block nb),
// int32, starting from -128 * colsum[nb, g] (u8 shift compensation). Group g is
// k-steps [g * gsteps, min((g + 1) * gsteps, k_pad / 4)). The tile is parked in buf (L1) for
// the epilogues: keeping 12 accumulators live into them makes GCC spill inside
// the k loop; the empty asm stops it from forwarding the stores back.
template <int MR>
SPARQ_INLINE void accumulate_to(const Ctx& x, int32_t (&buf)[MR][kS8BlockN], int64_t i0, int64_t nb, int64_t g) {
  const int64_t lda = x.lda, l3 = 3 * lda;
  const int64_t s0 = g * x.gsteps;
  const int64_t nsteps = std::min(x.gsteps, x.ksteps - s0);
  const int32_t* cs = x.colsum + s8_group_index(nb, g, x.groups);
  const __m256i m128 = _mm256_set1_epi32(-128);
  const __m256i init0 = _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs)), m128);
  const __m256i init1 = _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + 8)), m128);
  __m256i acc[MR][2];
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    acc[r][0] = init0;
    acc[r][1] = init1;
  });
  const uint8_t* p = x.a + i0 * lda + s0 * kS8StepK;
  const uint8_t* p4 = MR > 4 ? p + 4 * lda : p;
  const int8_t* bp = x.b + nb * x.bstride + s0 * kS8BlockBytes;
  for (int64_t s = nsteps; s > 0; --s) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
    _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetch), _MM_HINT_T0);
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      const __m256i av = bcast_a(arow<r>(p, p4, lda, l3));
      acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], av, b1);
    });
    p += kS8StepK;
    p4 += kS8StepK;
    bp += kS8BlockBytes;
  }
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf[r]), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf[r] + 8), acc[r][1]);
  });
  asm volatile("" : : "r"(&buf[0][0]) : "memory");
}

// Valid columns of block nb: v = n - 16 * nb, in [1, 16] for the blocks the
// contract passes (nb < s8_blocks(b)); clamped to 0 past n (nothing written).
SPARQ_INLINE int64_t valid_cols(int64_t n, int64_t nb) {
  return std::max<int64_t>(0, std::min<int64_t>(kS8BlockN, n - nb * kS8BlockN));
}

// out[0..v) = (float(acc) * sc) * as + bi, 16 lanes computed, v written.
SPARQ_INLINE void store_f32(float* out, int64_t v, const int32_t* acc, __m256 sc0, __m256 sc1, __m256 as,
                            __m256 bi0, __m256 bi1) {
  __m256 y0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc))), sc0);
  __m256 y1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + 8))), sc1);
  y0 = _mm256_add_ps(_mm256_mul_ps(y0, as), bi0);
  y1 = _mm256_add_ps(_mm256_mul_ps(y1, as), bi1);
  if (v == kS8BlockN) {
    _mm256_storeu_ps(out, y0);
    _mm256_storeu_ps(out + 8, y1);
  } else {
    alignas(32) float t[kS8BlockN];
    _mm256_store_ps(t, y0);
    _mm256_store_ps(t + 8, y1);
    std::memcpy(out, t, size_t(v) * sizeof(float));
  }
}

// bias[nb*16 .. nb*16+16) with the columns >= n read as 0 (bias has only n entries).
SPARQ_INLINE void load_bias(const float* bias, int64_t nb, int64_t v, __m256& b0, __m256& b1) {
  if (!bias) {
    b0 = b1 = _mm256_setzero_ps();
  } else if (v == kS8BlockN) {
    b0 = _mm256_loadu_ps(bias + nb * kS8BlockN);
    b1 = _mm256_loadu_ps(bias + nb * kS8BlockN + 8);
  } else {
    alignas(32) float t[kS8BlockN] = {};
    std::memcpy(t, bias + nb * kS8BlockN, size_t(v) * sizeof(float));
    b0 = _mm256_load_ps(t);
    b1 = _mm256_load_ps(t + 8);
  }
}

// One MR x 16 tile at rows [i0, i0+MR), block nb, groups == 1 (exact int32, or
// f32 with one scale per column; same order of operations as the reference).
template <int MR>
void tile_one_group(const Ctx& x, int64_t i0, int64_t nb) {
  alignas(32) int32_t acc[MR][kS8BlockN];
  accumulate_to<MR>(x, acc, i0, nb, 0);
  const int64_t v = valid_cols(x.n, nb);
  if (x.ci) {
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      int32_t* out = x.ci + (i0 + r) * x.ldc + nb * kS8BlockN;
      if (v == kS8BlockN) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_load_si256(reinterpret_cast<const __m256i*>(acc[r])));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8),
                            _mm256_load_si256(reinterpret_cast<const __m256i*>(acc[r] + 8)));
      } else {
        std::memcpy(out, acc[r], size_t(v) * sizeof(int32_t));
      }
    });
    return;
  }
  const float* sc = x.scales + s8_group_index(nb, 0, x.groups);
  const __m256 sc0 = _mm256_loadu_ps(sc), sc1 = _mm256_loadu_ps(sc + 8);
  __m256 bi0, bi1;
  load_bias(x.bias, nb, v, bi0, bi1);
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    store_f32(x.c + (i0 + r) * x.ldc + nb * kS8BlockN, v, acc[r], sc0, sc1, _mm256_set1_ps(x.a_scale[i0 + r]), bi0,
              bi1);
  });
}

// groups > 1 (f32 only): an MR x 16 tile (MR <= 6) keeps its int32 group sums in
// registers (12 ymm, with 2 for B and 1 for A: all 16) and folds each group into
// f32 totals in L1 with one fma per accumulator: total += float(acc_g) *
// scale[g]. Measured on Zen 5 (m = 128, n = k = 4096, x per-channel time):
// parking the tile in L1 per group 1.27 (group 32) / 0.98 (group 128); 3 rows
// with the totals in registers 1.32 / 1.33; this 1.16 / 1.03. The k loop's
// vpdpbusd is asm with the accumulator tied ("+x"): through the intrinsic GCC 12
// copied every accumulator between registers on each k-step of this loop nest.
// Groups cover k in [g*group, (g+1)*group); k >= groups*group is zero padding.
// (A function, not a macro: clang 14 does not capture a variable into a lambda
// when only an asm statement uses it.)
SPARQ_INLINE void dpbusd_tied(__m256i& acc, __m256i a, __m256i b) {
#ifdef SPARQ_EMULATED_ISA
  acc = _mm256_dpbusd_avx_epi32(acc, a, b);
#else
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
#endif
}

template <int MR>
void tile_groups(const Ctx& x, int64_t i0, int64_t nb) {
  const int64_t lda = x.lda;
  alignas(32) float sum[MR][kS8BlockN];  // f32 totals in L1: 12 accumulators + B + A fill the 16 ymm
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    _mm256_store_ps(sum[r], _mm256_setzero_ps());
    _mm256_store_ps(sum[r] + 8, _mm256_setzero_ps());
  });
  const __m256i m128 = _mm256_set1_epi32(-128);
  for (int64_t g = 0; g < x.groups; ++g) {
    const int64_t s0 = g * x.gsteps;
    const int64_t nsteps = std::min(x.gsteps, x.ksteps - s0);  // >= 1: every group starts inside k_pad
    const int32_t* cs = x.colsum + s8_group_index(nb, g, x.groups);
    const uint8_t* p = x.a + i0 * lda + s0 * kS8StepK;
    const int8_t* bp = x.b + nb * x.bstride + s0 * kS8BlockBytes;
    // the first k-step starts from -128 * colsum, so every accumulator is a value of its own
    const __m256i init0 = _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs)), m128);
    const __m256i init1 = _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + 8)), m128);
    __m256i acc[MR][2];
    __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
    __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      const __m256i av = bcast_a(p + r * lda);
      acc[r][0] = _mm256_dpbusd_avx_epi32(init0, av, b0);
      acc[r][1] = _mm256_dpbusd_avx_epi32(init1, av, b1);
    });
    for (int64_t st = 1; st < nsteps; ++st) {
      p += kS8StepK;
      bp += kS8BlockBytes;
      b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
      b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
      _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetch), _MM_HINT_T0);
      static_for<MR>([&](auto r) SPARQ_LAMBDA {
        const __m256i av = bcast_a(p + r * lda);
        dpbusd_tied(acc[r][0], av, b0);
        dpbusd_tied(acc[r][1], av, b1);
      });
    }
    const float* sc = x.scales + s8_group_index(nb, g, x.groups);
    const __m256 sc0 = _mm256_loadu_ps(sc), sc1 = _mm256_loadu_ps(sc + 8);
    static_for<MR>([&](auto r) SPARQ_LAMBDA {
      __m256 t0 = sc0, t1 = sc1;
      if (x.a_gscale) {
        const __m256 ag = _mm256_set1_ps(x.a_gscale[(i0 + r) * x.groups + g]);
        t0 = _mm256_mul_ps(t0, ag);
        t1 = _mm256_mul_ps(t1, ag);
      }
      _mm256_store_ps(sum[r], _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][0]), t0, _mm256_load_ps(sum[r])));
      _mm256_store_ps(sum[r] + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][1]), t1, _mm256_load_ps(sum[r] + 8)));
    });
  }
  const int64_t v = valid_cols(x.n, nb);
  __m256 bi0, bi1;
  load_bias(x.bias, nb, v, bi0, bi1);
  static_for<MR>([&](auto r) SPARQ_LAMBDA {
    const __m256 as = _mm256_set1_ps(x.a_scale[i0 + r]);
    const __m256 y0 = _mm256_add_ps(_mm256_mul_ps(_mm256_load_ps(sum[r]), as), bi0);
    const __m256 y1 = _mm256_add_ps(_mm256_mul_ps(_mm256_load_ps(sum[r] + 8), as), bi1);
    float* out = x.c + (i0 + r) * x.ldc + nb * kS8BlockN;
    if (v == kS8BlockN) {
      _mm256_storeu_ps(out, y0);
      _mm256_storeu_ps(out + 8, y1);
    } else {
      alignas(32) float t[kS8BlockN];
      _mm256_store_ps(t, y0);
      _mm256_store_ps(t + 8, y1);
      std::memcpy(out, t, size_t(v) * sizeof(float));
    }
  });
}

using TileFn = void (*)(const Ctx&, int64_t, int64_t);
// [rows - 1]
const TileFn kTiles[kMR] = {&tile_one_group<1>, &tile_one_group<2>, &tile_one_group<3>,
                            &tile_one_group<4>, &tile_one_group<5>, &tile_one_group<6>};
const TileFn kTilesGrouped[kMR] = {&tile_groups<1>, &tile_groups<2>, &tile_groups<3>,
                                    &tile_groups<4>, &tile_groups<5>, &tile_groups<6>};

#undef SPARQ_INLINE
#undef SPARQ_LAMBDA

}  // namespace

void gemm_s8_avxvnni(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  const PackedS8& b = *p.b;
  const Ctx x = make_ctx(p, m0, m1, nb0, nb1);
  nb1 = std::min(nb1, s8_blocks(b));  // release builds clamp what the asserts check
  if (m0 >= m1 || nb0 >= nb1) return;

  const int64_t mc = std::max<int64_t>(kMR, kABlockBytes / b.k_pad / kMR * kMR);
  for (int64_t ib = m0; ib < m1; ib += mc) {
    const int64_t ie = std::min(m1, ib + mc);
    for (int64_t nb = nb0; nb < nb1; ++nb) {
      for (int64_t i = ib; i < ie; i += kMR) {
        const int64_t mr = std::min<int64_t>(kMR, ie - i);
        (x.grouped ? kTilesGrouped[mr - 1] : kTiles[mr - 1])(x, i, nb);
      }
    }
  }
}

}  // namespace sparq
