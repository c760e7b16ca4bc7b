// ceiling_avx512.cpp - the AVX-512 units' ceilings (see ceiling_avx2.cpp): fp32
// FMA on zmm and int8 vpdpbusd on zmm, from in-register loops with independent
// chains (enough of them to cover the latency at two per cycle). Built with the
// AVX-512 flags; called only where the CPU itself has AVX-512 VNNI.
#include <immintrin.h>

#include <cstdint>

#include "ceiling.h"

namespace sparq {

// Named accumulators (an array of them stayed on the stack with GCC 12, see
// ceiling_avxvnni.cpp); sums through memory (the reduce intrinsics warn).
float ceiling_fma512_loop(int64_t iters) {
  __m512 c0 = _mm512_set1_ps(0.f), c1 = _mm512_set1_ps(.001f), c2 = _mm512_set1_ps(.002f), c3 = _mm512_set1_ps(.003f);
  __m512 c4 = _mm512_set1_ps(.004f), c5 = _mm512_set1_ps(.005f), c6 = _mm512_set1_ps(.006f), c7 = _mm512_set1_ps(.007f);
  __m512 c8 = _mm512_set1_ps(.008f), c9 = _mm512_set1_ps(.009f), c10 = _mm512_set1_ps(.01f), c11 = _mm512_set1_ps(.011f);
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.0001f);
  for (int64_t t = 0; t < iters; ++t) {
    c0 = _mm512_fmadd_ps(c0, b, c);
    c1 = _mm512_fmadd_ps(c1, b, c);
    c2 = _mm512_fmadd_ps(c2, b, c);
    c3 = _mm512_fmadd_ps(c3, b, c);
    c4 = _mm512_fmadd_ps(c4, b, c);
    c5 = _mm512_fmadd_ps(c5, b, c);
    c6 = _mm512_fmadd_ps(c6, b, c);
    c7 = _mm512_fmadd_ps(c7, b, c);
    c8 = _mm512_fmadd_ps(c8, b, c);
    c9 = _mm512_fmadd_ps(c9, b, c);
    c10 = _mm512_fmadd_ps(c10, b, c);
    c11 = _mm512_fmadd_ps(c11, b, c);
  }
  const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                                 _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)),
                                               _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11))));
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  float r = 0.f;
  for (float x : v) r += x;
  return r;
}

// One vpdpbusd with its accumulator tied to a register (see ceiling_avxvnni.cpp).
static inline __attribute__((always_inline)) void dp(__m512i& acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
}

// 12 vpdpbusd chains; the empty asm keeps the operands opaque each iteration.
int ceiling_vnni512_loop(int64_t iters) {
  __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2), c3 = _mm512_set1_epi32(3);
  __m512i c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5), c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7);
  __m512i c8 = _mm512_set1_epi32(8), c9 = _mm512_set1_epi32(9), c10 = _mm512_set1_epi32(10), c11 = _mm512_set1_epi32(11);
  __m512i a0 = _mm512_set1_epi8(3), a1 = _mm512_set1_epi8(5), b0 = _mm512_set1_epi8(-2);
  for (int64_t t = 0; t < iters; ++t) {
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(b0));
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
  const __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                     _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)),
                                                      _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11))));
  alignas(64) int32_t v[16];
  _mm512_store_si512(v, s);
  uint32_t r = 0;  // the lanes wrap (as vpdpbusd's do): unsigned, so the sum may too
  for (int32_t x : v) r += uint32_t(x);
  return int(r & 0x7fffffff);
}

}  // namespace sparq
