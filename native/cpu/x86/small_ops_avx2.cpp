// small_ops_avx2.cpp - AVX2 versions of the decoder's small ops (RMSNorm,
// softmax, SwiGLU, add, f32 -> f16, argmax), 8 lanes with scalar tails. exp is a Cephes-style
// range reduction + degree-6 polynomial (about 2 ulp in f32). Checked against
// ref/small_ops_ref.cpp through test/small_ops.test.ts on every path.
#include <immintrin.h>

#include <cmath>

#include "../half.h"
#include "../kernels.h"
#include "avx2_math.h"

namespace sparq {
using namespace avx2;

void rmsnorm_avx2(const float* x, const float* w, float* y, int64_t d, float eps, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
      const __m256 a = _mm256_loadu_ps(xr + i), b = _mm256_loadu_ps(xr + i + 8);
      s0 = _mm256_fmadd_ps(a, a, s0);
      s1 = _mm256_fmadd_ps(b, b, s1);
    }
    double ss = hsum(_mm256_add_ps(s0, s1));
    for (; i < d; ++i) ss += double(xr[i]) * xr[i];
    const float inv = float(1.0 / std::sqrt(ss / double(d) + eps));
    const __m256 vinv = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= d; i += 8)
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), vinv), _mm256_loadu_ps(w + i)));
    for (; i < d; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

void softmax_avx2(const float* x, float* y, int64_t n, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(xr + i));
    float mx = hmax(vm);
    for (; i < n; ++i) mx = std::fmax(mx, xr[i]);
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vmx));
      _mm256_storeu_ps(yr + i, e);
      vs = _mm256_add_ps(vs, e);
    }
    double sum = hsum(vs);
    for (; i < n; ++i) {
      yr[i] = exp_scalar(xr[i] - mx);
      sum += yr[i];
    }
    const float inv = float(1.0 / sum);
    const __m256 vinv = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_loadu_ps(yr + i), vinv));
    for (; i < n; ++i) yr[i] *= inv;
  }
}

void swiglu_avx2(const float* a, const float* b, float* y, int64_t i0, int64_t i1) {
  const __m256 one = _mm256_set1_ps(1.f), neg = _mm256_set1_ps(-0.f);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 va = _mm256_loadu_ps(a + i);
    const __m256 den = _mm256_add_ps(one, exp_ps(_mm256_xor_ps(va, neg)));
    _mm256_storeu_ps(y + i, _mm256_div_ps(_mm256_mul_ps(va, _mm256_loadu_ps(b + i)), den));
  }
  for (; i < i1; ++i) y[i] = a[i] * b[i] / (1.f + exp_scalar(-a[i]));
}

void add_avx2(const float* a, const float* b, float* y, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < i1; ++i) y[i] = a[i] + b[i];
}

// F16C rounds to nearest even like float_to_half, overflows to inf and keeps
// subnormal halves (no DAZ / FTZ applies to it); a NaN stays a NaN (F16C keeps
// its payload's top bits where float_to_half writes one quiet NaN).
void to_half_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = float_to_half(x[i]);
}

// Per lane the largest value and the first index holding it (a later one replaces it
// only when strictly larger), NaN / +inf noted on the way; then the lanes' best, the
// lowest index among equal values. Ties between -0 and +0 go to the first, as in the
// reference (neither is larger).
int64_t argmax_avx2(const float* x, int64_t n) {
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256 bv = _mm256_set1_ps(-INFINITY), bad = _mm256_setzero_ps();
  __m256i bi = _mm256_set1_epi32(-1), idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i eight = _mm256_set1_epi32(8);
  int64_t i = 0;
  if (n <= int64_t(1) << 30)  // lane indices in int32
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, inf, _CMP_NLT_UQ));  // NaN or +inf
      // strictly larger, or the lane's first value (-inf included)
      const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, bv, _CMP_GT_OQ), _mm256_castsi256_ps(_mm256_cmpeq_epi32(bi, _mm256_set1_epi32(-1))));
      bv = _mm256_blendv_ps(bv, v, take);
      bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi), _mm256_castsi256_ps(idx), take));
      idx = _mm256_add_epi32(idx, eight);
    }
  if (!_mm256_testz_ps(bad, bad) || i == 0) return argmax_ref(x, n);  // the first bad index (or a short / huge row)
  alignas(32) float v8[8];
  alignas(32) int32_t i8[8];
  _mm256_store_ps(v8, bv);
  _mm256_store_si256(reinterpret_cast<__m256i*>(i8), bi);
  int64_t best = i8[0];
  float b = v8[0];
  for (int l = 1; l < 8; ++l)
    if (v8[l] > b || (v8[l] == b && i8[l] < best)) {
      b = v8[l];
      best = i8[l];
    }
  for (; i < n; ++i) {
    if (!(x[i] < INFINITY)) return -1 - i;
    if (x[i] > b) {
      b = x[i];
      best = i;
    }
  }
  return best;
}

}  // namespace sparq
