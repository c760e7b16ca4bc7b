// quant_rows_avx2.cpp - dynamic per-row int8 quantization of activations
// (AVX2). Same rounding as quant_rows_ref (round half to even via cvtps under
// the default MXCSR, x * (1/s) then clamp to [-127, 127]): results are
// identical, checked in native/test.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../kernels.h"

namespace sparq {

void quant_rows_avx2(const QuantRowsArgs& p, int64_t m0, int64_t m1) {
  const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  for (int64_t i = m0; i < m1; ++i) {
    const float* x = p.x + i * p.ldx;
    uint8_t* o = p.out + i * p.ldo;
    float s = p.static_scale;
    int64_t q = 0;
    if (s <= 0.f) {
      __m256 m = _mm256_setzero_ps();
      for (; q + 8 <= p.k; q += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + q), sign_mask));
      alignas(32) float t[8];
      _mm256_store_ps(t, m);
      float amax = 0.f;
      for (float v : t) amax = std::fmax(amax, v);
      for (; q < p.k; ++q) amax = std::fmax(amax, std::fabs(x[q]));
      s = amax > 0.f ? amax / 127.f : 1.f;
    }
    const float inv = 1.f / s;
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i shift = _mm256_set1_epi8(p.shift128 ? char(0x80) : 0);
    q = 0;
    __m256 nonfinite = _mm256_setzero_ps();  // sums x - x: 0 unless some x is NaN or +-Inf
    for (; q + 32 <= p.k; q += 32) {
      __m256i v[4];
      for (int u = 0; u < 4; ++u) {
        const __m256 xv = _mm256_loadu_ps(x + q + 8 * u);
        nonfinite = _mm256_add_ps(nonfinite, _mm256_sub_ps(xv, xv));
        __m256 f = _mm256_mul_ps(xv, vinv);
        // max / min return their second operand for a NaN (0 * inf when the scale is
        // denormal and 1 / s overflows): -127 then, as the scalar fmax gives - never -128
        f = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi);
        v[u] = _mm256_cvtps_epi32(f);
      }
      // pack 4 x 8 int32 -> 32 int8, fixing the lane interleave of packs
      const __m256i w01 = _mm256_packs_epi32(v[0], v[1]);
      const __m256i w23 = _mm256_packs_epi32(v[2], v[3]);
      __m256i b = _mm256_packs_epi16(w01, w23);
      b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + q), _mm256_xor_si256(b, shift));
    }
    bool finite = _mm256_movemask_ps(_mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q)) == 0;
    for (; q < p.k; ++q) {
      if (!std::isfinite(x[q])) finite = false;
      float r = std::nearbyint(x[q] * inv);
      r = std::fmin(127.f, std::fmax(-127.f, r));
      const int v = int(r);
      o[q] = uint8_t(p.shift128 ? v + 128 : int8_t(v));
    }
    std::memset(o + p.k, p.shift128 ? 0x80 : 0, size_t(p.k_pad - p.k));
    if (p.rowsum) {
      for (int64_t g = 0; g < p.groups; ++g) {
        const int64_t k0 = g * p.group, k1 = std::min<int64_t>(k0 + p.group, p.k);
        int32_t sum = 0;
        for (int64_t t = k0; t < k1; ++t) sum += p.shift128 ? int32_t(o[t]) - 128 : int32_t(int8_t(o[t]));
        p.rowsum[i * p.groups + g] = sum;
      }
    }
    p.scale[i] = finite ? s : NAN;  // a NaN / Inf input makes the row's outputs NaN
  }
}

}  // namespace sparq
