// avx2_math.h - vector helpers shared by the AVX2 kernels (compiled with
// -mavx2 -mfma): exp, horizontal sum / max. Header-only.
#pragma once
#include <immintrin.h>

#include "vec_math.h"

namespace sparq {
namespace avx2 {

// The AVX2 width for vec_math.h.
struct Avx2Ops {
  using F = __m256;
  using I = __m256i;
  static F set(float v) { return _mm256_set1_ps(v); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I cvt(F a) { return _mm256_cvtps_epi32(a); }
  static I iset(int v) { return _mm256_set1_epi32(v); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I shl23(I a) { return _mm256_slli_epi32(a, 23); }
  static F as_float(I a) { return _mm256_castsi256_ps(a); }
};

// e^x for x in [-87.3, 88.7] (clamped outside).
inline __m256 exp_ps(__m256 x) { return exp_clamped<Avx2Ops>(x); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float exp_scalar(float x) {
  alignas(32) float t[8];
  _mm256_store_ps(t, exp_ps(_mm256_set1_ps(x)));
  return t[0];
}

// e^x with exact zeros below the f32 range: e^(-inf) = 0 (masked scores).
inline __m256 exp_ps_flush(__m256 x) {
  return _mm256_and_ps(exp_ps(x), _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ));
}

}  // namespace avx2
}  // namespace sparq
