// q4_avx2.cpp - the 4-bit GEMV for m <= 8 activation rows: 16 bytes give 32
// weights (low nibbles, then high nibbles), multiplied as unsigned v + 8 with
// the int8 activations by vpmaddubsw + vpmaddwd into int32 per group (the
// +8 taken back with the group's activation sum), then scaled into f32.
#include <immintrin.h>

#include "../q4.h"
#include "avx2_math.h"

namespace sparq {
namespace {

// Unsigned nibbles u = v + 8 go straight into vpmaddubsw (u8 x s8, pair sums
// below 2 x 15 x 127: no saturation); each group's int32 sum then drops
// 8 x sum(x) of the group in lane 0 before it is scaled into f32.
template <int MR>
void rows(const Q4Args& a, int64_t j0, int64_t j1) {
  const PackedQ4& p = *a.w;
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t blocks_per_group = p.group / 32, blocks = p.k_pad / 32;
  for (int64_t j = j0; j < j1; ++j) {
    const uint8_t* row = p.data.data() + j * p.row_bytes();
    const float* sc = p.scale.data() + j * p.groups;
    __m256 accf[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) accf[i] = _mm256_setzero_ps();
    for (int64_t g = 0, b = 0; g < p.groups; ++g) {
      __m256i acc[MR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i] = _mm256_setr_epi32(-8 * a.xsum[i * p.groups + g], 0, 0, 0, 0, 0, 0, 0);
      for (int64_t e = std::min(blocks, b + blocks_per_group); b < e; ++b) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * 16));
        const __m256i u = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(bytes, lo4)), _mm_and_si128(_mm_srli_epi16(bytes, 4), lo4), 1);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq + i * a.ldq + b * 32));
          acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), ones));
        }
      }
      const __m256 s = _mm256_set1_ps(sc[g]);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), s, accf[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.y[i * p.n + j] = avx2::hsum(accf[i]) * a.xs[i];
  }
}

}  // namespace

void q4_gemv_avx2(const Q4Args& a, int64_t j0, int64_t j1) {
  switch (a.m) {
    case 1: rows<1>(a, j0, j1); break;
    case 2: rows<2>(a, j0, j1); break;
    case 3: rows<3>(a, j0, j1); break;
    case 4: rows<4>(a, j0, j1); break;
    case 5: rows<5>(a, j0, j1); break;
    case 6: rows<6>(a, j0, j1); break;
    case 7: rows<7>(a, j0, j1); break;
    default: rows<8>(a, j0, j1); break;
  }
}

}  // namespace sparq
