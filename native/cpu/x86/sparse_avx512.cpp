// sparse_avx512.cpp - the int8 bitmask kernel for AVX-512 VBMI2 + VNNI (m <= 8):
// vpexpandb loads the packed nonzeros of 64 weights straight into their lanes
// under the 64-bit mask, and vpdpbusd multiplies them with the activations
// (u8 = int8 + 128; the shift is taken back with the row's weight sum, which
// a second vpdpbusd against ones accumulates). Other formats and value types
// use the AVX2 kernels.
#include <cassert>
#include <immintrin.h>

#include <cstring>

#include "../sparse.h"

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

template <int MR>
void spmv_bitmask_i8(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const __m512i flip = _mm512_set1_epi8(char(0x80)), one = _mm512_set1_epi8(1);
  const int64_t words = s.words();
  for (int64_t j = j0; j < j1; ++j) {
    const int8_t* vp = s.vq.data() + s.row_ptr[size_t(j)];
    const uint32_t* mw = s.mask.data() + j * words;
    __m512i acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_si512();
    __m512i wsum = _mm512_setzero_si512();
    for (int64_t w = 0; w < words; w += 2) {
      // two mask words = 64 weights; an odd last word leaves the upper lanes zero
      // (activation rows are padded to a multiple of 64 bytes)
      uint64_t b = mw[w];
      if (w + 1 < words) b |= uint64_t(mw[w + 1]) << 32;
      const __m512i v = _mm512_maskz_expandloadu_epi8(__mmask64(b), vp);
      vp += __builtin_popcountll(b);
      wsum = _mm512_dpbusd_epi32(wsum, one, v);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
        acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_xor_si512(_mm512_loadu_si512(a.xq + i * a.ldq + w * 32), flip), v);
    }
    // sum (x + 128) w - 128 sum w, in modular int32 (the result itself fits)
    const uint32_t ws = lane_sum(wsum);
    const float sc = s.scale[size_t(j)];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const int32_t dot = int32_t(lane_sum(acc[i]) - 128u * ws);
      a.y[i * s.n + j] = sparse_q_out(dot, a.xs[i], sc, a.bias, j);
    }
  }
}

}  // namespace

void spmv_avx512(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  if (!s.int8 || s.format != SparseFormat::bitmask) return spmv_avx2(s, a, j0, j1);
  // 64 activation bytes per pair of mask words: rows padded to a multiple of 64 (sparse.h)
  assert(1 <= a.m && a.m <= 8 && 0 <= j0 && j0 <= j1 && j1 <= s.n);
  assert(a.ldq % 64 == 0 && a.ldq >= s.words() * 32);
  switch (a.m) {
    case 1: spmv_bitmask_i8<1>(s, a, j0, j1); break;
    case 2: spmv_bitmask_i8<2>(s, a, j0, j1); break;
    case 3: spmv_bitmask_i8<3>(s, a, j0, j1); break;
    case 4: spmv_bitmask_i8<4>(s, a, j0, j1); break;
    case 5: spmv_bitmask_i8<5>(s, a, j0, j1); break;
    case 6: spmv_bitmask_i8<6>(s, a, j0, j1); break;
    case 7: spmv_bitmask_i8<7>(s, a, j0, j1); break;
    case 8: spmv_bitmask_i8<8>(s, a, j0, j1); break;
    default: break;  // m in [1, 8] (asserted above)
  }
}

}  // namespace sparq
