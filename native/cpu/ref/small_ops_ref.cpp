// small_ops_ref.cpp - scalar references of the decoder's small ops (RMSNorm,
// softmax, SwiGLU, add, f32 -> f16, argmax): f64 accumulation, libm exp. The oracles of the AVX2
// versions in x86/small_ops_avx2.cpp.
#include <cmath>

#include "../half.h"
#include "../kernels.h"

namespace sparq {

void rmsnorm_ref(const float* x, const float* w, float* y, int64_t d, float eps, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t i = 0; i < d; ++i) y[r * d + i] = float(xr[i] * inv * w[i]);
  }
}

void softmax_ref(const float* x, float* y, int64_t n, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * n;
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, double(xr[i]));
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(double(xr[i]) - mx);
    for (int64_t i = 0; i < n; ++i) y[r * n + i] = float(std::exp(double(xr[i]) - mx) / sum);
  }
}

void swiglu_ref(const float* a, const float* b, float* y, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) y[i] = float(double(a[i]) / (1.0 + std::exp(-double(a[i]))) * b[i]);
}

void add_ref(const float* a, const float* b, float* y, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
}

void to_half_ref(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = float_to_half(x[i]);
}

int64_t argmax_ref(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!(x[i] < INFINITY)) return -1 - i;
    if (x[i] > x[best]) best = i;
  }
  return best;
}

}  // namespace sparq
