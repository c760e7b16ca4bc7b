// ceiling_avxvnni.cpp - the AVX-VNNI ceiling (see ceiling_avx2.cpp): int8
// vpdpbusd on ymm (the VEX form), independent chains. Built with -mavxvnni;
// called only where the CPU itself has AVX-VNNI.
#include <immintrin.h>

#include <cstdint>

#include "ceiling.h"

namespace sparq {

// One vpdpbusd with its accumulator tied to a register: through the intrinsic
// GCC 12 copied and stored every accumulator each round (halving the rate).
static inline __attribute__((always_inline)) void dp(__m256i& acc, __m256i a, __m256i b) {
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
}

int ceiling_vnni256_loop(int64_t iters) {
  __m256i c0 = _mm256_set1_epi32(0), c1 = _mm256_set1_epi32(1), c2 = _mm256_set1_epi32(2), c3 = _mm256_set1_epi32(3);
  __m256i c4 = _mm256_set1_epi32(4), c5 = _mm256_set1_epi32(5), c6 = _mm256_set1_epi32(6), c7 = _mm256_set1_epi32(7);
  __m256i c8 = _mm256_set1_epi32(8), c9 = _mm256_set1_epi32(9), c10 = _mm256_set1_epi32(10), c11 = _mm256_set1_epi32(11);
  __m256i a0 = _mm256_set1_epi8(3), a1 = _mm256_set1_epi8(5), b0 = _mm256_set1_epi8(-2);
  for (int64_t t = 0; t < iters; ++t) {
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(b0));
    dp(c0, a0, b0);
    dp(c1, a1, b0);
    dp(c2, a0, b0);
    dp(c3, a1, b0);
    dp(c4, a0, b0);
    dp(c5, a1, b0);
    dp(c6, a0, b0);
    dp(c7, a1, b0);
    dp(c8, a0, b0);
    dp(c9, a1, b0);
    dp(c10, a0, b0);
    dp(c11, a1, b0);
  }
  __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
                               _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));
  s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(c8, c9), _mm256_add_epi32(c10, c11)));
  // the lanes wrap (as vpdpbusd's do): summed unsigned, so the sum may too
  return int((uint32_t(_mm256_extract_epi32(s, 0)) + uint32_t(_mm256_extract_epi32(s, 7))) & 0x7fffffff);
}

}  // namespace sparq
