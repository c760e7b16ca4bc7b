// sparse_avx512.cpp - the int8 bitmask and 2:4 kernels for AVX-512 VBMI2 + VNNI (m <= 8).
// Bitmask:
// per 64 weights, one unaligned load of the row's next packed values, vpexpandb
// in its register form puts them into their lanes under the 64-bit mask, a xor
// makes them u8 (w + 128; the lanes the mask leaves out become 128), and one
// vpdpbusd per activation row multiplies them with the int8 activations. The
// shift is taken back with 128 x the activation row's sum, once per call (every
// lane is multiplied, so the sum is over all of k).
//
// Two things decide its speed on AMD Zen 4 / Zen 5 (measured on Zen 5):
//  - the memory form of vpexpandb is microcoded (GCC folds the load into it:
//    1.4x slower), so the expansion is written as inline asm on a register;
//  - vpexpandb {z} waits on its destination register's old value, as a merge
//    would, and GCC gives every expansion of a row the same register, chaining
//    them through the expansion's latency: a zeroing idiom on the destination
//    first took a 64-weight step from 1.9 to 0.85 ns (one thread, 90% sparse).
// Compressing the activations under the mask instead (vpcompressb, and the row's
// sum of values for the shift) measured the same once both had the zeroing idiom.
// Other formats and value types use the AVX2 kernels.
#include <cassert>
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "../sparse.h"
#include "../rows.h"

#ifndef SPARQ_LAMBDA
#define SPARQ_LAMBDA __attribute__((always_inline))
#endif

namespace sparq {
namespace {

// modular int32 sum of the 16 lanes (once per row)
inline uint32_t lane_sum(__m512i v) {
  alignas(64) uint32_t t[16];
  _mm512_store_si512(t, v);
  uint32_t s = 0;
  for (int l = 0; l < 16; ++l) s += t[l];
  return s;
}

// vpexpandb {z} of register x under k, after a zeroing idiom on its destination
inline __m512i expand_i8(__mmask64 k, __m512i x) {
#if defined(SPARQ_EMULATED_ISA)
  return _mm512_maskz_expand_epi8(k, x);
#else
  __m512i r;
  asm("vpxord %0, %0, %0\n\tvpexpandb %1, %0%{%2%}%{z%}" : "=&v"(r) : "v"(x), "Yk"(k));
  return r;
#endif
}

// 128 x each activation row's sum over its first `span` bytes (zero past k), modular:
// the shift the u8 weights (w + 128) add to every dot product
template <int MR>
inline void activation_shifts(const SpArgs& a, int64_t span, uint32_t* shift) {
  const __m512i ones = _mm512_set1_epi8(1);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    __m512i t = _mm512_setzero_si512();
    for (int64_t c = 0; c < span; c += 64) t = _mm512_dpbusd_epi32(t, ones, _mm512_loadu_si512(a.xq + i * a.ldq + c));
    shift[i] = 128u * lane_sum(t);
  }
}

// y[i, j] of row j from its S accumulator sets: sum (w + 128) x - 128 sum x, in modular
// int32 (the result itself fits), then the int8 epilogue
template <int MR, int S>
inline void store_row(const __m512i (&acc)[S][MR], const uint32_t* shift, const SparseWeight& s, const SpArgs& a, int64_t j) {
  const float sc = s.scale[size_t(j)];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    __m512i t = acc[0][i];
    for (int q = 1; q < S; ++q) t = _mm512_add_epi32(t, acc[q][i]);
    const int32_t dot = int32_t(lane_sum(t) - shift[i]);
    a.y[i * s.n + j] = sparse_q_out(dot, a.xs[i], sc, a.bias, j);
  }
}

template <int MR>
void spmv_bitmask_i8(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const int64_t words = s.words(), span = (words + 1) / 2 * 64;  // activation bytes read per row
  uint32_t shift[MR];
  activation_shifts<MR>(a, span, shift);
  // accumulator sets taken in turn per pair of mask words: one vpdpbusd chain per
  // activation row would wait on its own latency every 64 weights (four sets for
  // m <= 2, two above: 4 x 8 accumulators do not fit in the 32 registers)
  constexpr int S = MR <= 2 ? 4 : 2;
  for (int64_t j = j0; j < j1; ++j) {
    const int8_t* vp = s.vq.data() + s.row_ptr[size_t(j)];
    const uint32_t* mw = s.mask.data() + j * words;
    __m512i acc[S][MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      for (int q = 0; q < S; ++q) acc[q][i] = _mm512_setzero_si512();
    // 64 weights under mask bits b, activations from column w * 32 (64 bytes from vp:
    // the values are padded by kSparseI8Pad zero bytes)
#define SPARQ_BITMASK_STEP(b, w, ac)                                                                                      \
  {                                                                                                                       \
    const __m512i v = _mm512_xor_si512(expand_i8(__mmask64(b), _mm512_loadu_si512(vp)), flip);                          \
    vp += __builtin_popcountll(b);                                                                                        \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                                                  \
      ac[i] = _mm512_dpbusd_epi32(ac[i], v, _mm512_loadu_si512(a.xq + i * a.ldq + (w) * 32));                             \
  }
    int64_t w = 0;
    for (; w + 8 <= words; w += 8) {
      uint64_t b[4];
      std::memcpy(b, mw + w, 32);  // mask words w, w + 1 as one 64-bit mask (little-endian), ...
      SPARQ_BITMASK_STEP(b[0], w, acc[0])
      SPARQ_BITMASK_STEP(b[1], w + 2, acc[1])
      SPARQ_BITMASK_STEP(b[2], w + 4, acc[2 % S])
      SPARQ_BITMASK_STEP(b[3], w + 6, acc[3 % S])
    }
    for (; w < words; w += 2) {
      // an odd last word leaves the upper lanes at 128, against activations that are
      // zero there (rows padded to a multiple of 64 bytes)
      uint64_t b = mw[w];
      if (w + 1 < words) b |= uint64_t(mw[w + 1]) << 32;
      SPARQ_BITMASK_STEP(b, w, acc[0])
    }
#undef SPARQ_BITMASK_STEP
    store_row<MR, S>(acc, shift, s, a, j);
  }
}

// 2:4 index bytes -> masks: each byte holds two groups' index pairs (a nibble each: i0 | i1 << 2,
// ascending); vpshufb turns every nibble into its mask nibble (1 << i0 | 1 << i1), so 64
// index bytes give the 64-bit masks of 8 steps of 64 weights.
struct Nm24Masks {
  // mask nibble of each index nibble, in the low and in the high half of a byte (x4 for
  // the four 128-bit lanes of vpshufb); nibbles with i0 == i1 only occur in the padding
  struct alignas(64) Lut {
    uint8_t t[2][64];
    Lut() {
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 64; ++l) t[h][l] = uint8_t((1 << (l & 3) | 1 << ((l & 15) >> 2)) << (4 * h));
    }
  };
  __m512i lut_lo, lut_hi, nib;
  Nm24Masks() {
    static const Lut lut;
    lut_lo = _mm512_load_si512(lut.t[0]);
    lut_hi = _mm512_load_si512(lut.t[1]);
    nib = _mm512_set1_epi8(0x0f);
  }
  void operator()(const uint8_t* idx, uint64_t* mk) const {
    const __m512i ib = _mm512_loadu_si512(idx);
    _mm512_store_si512(mk, _mm512_or_si512(_mm512_shuffle_epi8(lut_lo, _mm512_and_si512(ib, nib)),
                                           _mm512_shuffle_epi8(lut_hi, _mm512_and_si512(_mm512_srli_epi16(ib, 4), nib))));
  }
};

// N:M 2:4, int8: per 64 weights (16 groups), 32 values (a fixed stride: no popcount)
// and 8 index bytes, each two groups' index pairs (a nibble each: i0 | i1 << 2,
// ascending). vpshufb turns every nibble into its mask nibble (1 << i0 | 1 << i1),
// for 512 weights at a time, and the step is the bitmask kernel's.
template <int MR>
void spmv_nm24_i8(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const Nm24Masks masks;
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const int64_t steps = (s.k + 63) / 64, per = s.groups() * 2, rb = s.idx_row_bytes();
  uint32_t shift[MR];
  activation_shifts<MR>(a, steps * 64, shift);
  constexpr int S = 2;  // accumulator sets, taken in turn per step
  alignas(64) uint64_t mk[8];
  for (int64_t j = j0; j < j1; ++j) {
    const int8_t* vp = s.vq.data() + j * per;
    const uint8_t* ip = s.idx.data() + j * rb;
    __m512i acc[S][MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      for (int q = 0; q < S; ++q) acc[q][i] = _mm512_setzero_si512();
    for (int64_t c = 0; c < steps; c += 8) {
      // the masks of steps c .. c + 7 from 64 index bytes (past the row: the next row's
      // or the kSparseIdxPad zeros; their lanes lie past k, against zero activations,
      // or in steps not taken)
      masks(ip + c * 8, mk);
      const int64_t t1 = std::min<int64_t>(8, steps - c);
      // step t into accumulator set ac: 64 bytes from vp, of which the expansion takes the
      // step's 32 (the values are padded by kSparseI8Pad)
      auto step = [&](int64_t t, __m512i* ac) SPARQ_LAMBDA {
        const uint64_t b = mk[t];
        const __m512i v = _mm512_xor_si512(expand_i8(__mmask64(b), _mm512_loadu_si512(vp)), flip);
        vp += 32;
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) ac[i] = _mm512_dpbusd_epi32(ac[i], v, _mm512_loadu_si512(a.xq + i * a.ldq + (c + t) * 64));
      };
      int64_t t = 0;
      for (; t + 2 <= t1; t += 2) {
        step(t, acc[0]);
        step(t + 1, acc[1]);
      }
      if (t < t1) step(t, acc[0]);
    }
    store_row<MR, S>(acc, shift, s, a, j);
  }
}

template <int MR>
void spmv_rows(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  if (s.format == SparseFormat::bitmask) spmv_bitmask_i8<MR>(s, a, j0, j1);
  else spmv_nm24_i8<MR>(s, a, j0, j1);
}

}  // namespace

// Row j as int8 for the prefill GEMM: the kernels' expansions stored, 64 lanes at a time
// (up to round_up(k, 64) bytes; past k unspecified).
void sprow_avx512(const SparseWeight& s, int64_t j, int8_t* out) {
  if (s.int4) {
    sprow_avx2(s, j, out);
  } else if (s.format == SparseFormat::bitmask) {
    const int8_t* vp = s.vq.data() + s.row_ptr[size_t(j)];
    const uint32_t* mw = s.mask.data() + j * s.words();
    for (int64_t w = 0, words = s.words(); w < words; w += 2) {
      uint64_t b = mw[w];
      if (w + 1 < words) b |= uint64_t(mw[w + 1]) << 32;
      _mm512_storeu_si512(out + w * 32, expand_i8(__mmask64(b), _mm512_loadu_si512(vp)));
      vp += __builtin_popcountll(b);
    }
  } else if (s.format == SparseFormat::nm && s.N == 2 && s.M == 4) {
    const Nm24Masks masks;
    alignas(64) uint64_t mk[8];
    const int8_t* vp = s.vq.data() + j * s.groups() * 2;
    const uint8_t* ip = s.idx.data() + j * s.idx_row_bytes();
    for (int64_t c = 0, steps = (s.k + 63) / 64; c < steps; c += 8) {
      masks(ip + c * 8, mk);
      for (int64_t t = 0; t < 8 && c + t < steps; ++t, vp += 32)
        _mm512_storeu_si512(out + (c + t) * 64, expand_i8(__mmask64(mk[t]), _mm512_loadu_si512(vp)));
    }
  } else {
    sprow_avx2(s, j, out);
  }
}

void spmv_avx512(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const bool nm24 = s.format == SparseFormat::nm && s.N == 2 && s.M == 4;
  if (!s.int8 || (s.format != SparseFormat::bitmask && !nm24)) return spmv_avx2(s, a, j0, j1);
  // 64 activation bytes per pair of mask words: rows padded to a multiple of 64 (sparse.h)
  assert(1 <= a.m && a.m <= 8 && 0 <= j0 && j0 <= j1 && j1 <= s.n);
  assert(int64_t(s.vq.size()) >= s.nnz + kSparseI8Pad);
  assert(a.ldq % 64 == 0 && a.ldq >= s.words() * 32);
  assert(!nm24 || int64_t(s.idx.size()) >= s.n * s.idx_row_bytes() + kSparseIdxPad);
  dispatch_rows<8>(a.m, [&](auto M) { spmv_rows<decltype(M)::value>(s, a, j0, j1); });  // m in [1, 8] (asserted above)
}

}  // namespace sparq
