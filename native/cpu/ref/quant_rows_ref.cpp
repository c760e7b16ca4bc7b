// quant_rows_ref.cpp - scalar oracle for dynamic per-row (per-token) int8
// quantization of activations (see QuantRowsArgs in kernels.h).
#include <cmath>

#include "../kernels.h"

namespace sparq {

void quant_rows_ref(const QuantRowsArgs& p, int64_t m0, int64_t m1) {
  for (int64_t i = m0; i < m1; ++i) {
    const float* x = p.x + i * p.ldx;
    float s = p.static_scale;
    if (s <= 0.f) {
      float amax = 0.f;
      for (int64_t q = 0; q < p.k; ++q) amax = std::fmax(amax, std::fabs(x[q]));
      s = amax > 0.f ? amax / 127.f : 1.f;
    }
    const float inv = 1.f / s;
    uint8_t* o = p.out + i * p.ldo;
    if (p.rowsum)
      for (int64_t g = 0; g < p.groups; ++g) p.rowsum[i * p.groups + g] = 0;
    bool finite = true;
    for (int64_t q = 0; q < p.k_pad; ++q) {
      int v = 0;
      if (q < p.k) {
        if (!std::isfinite(x[q])) finite = false;
        float r = std::nearbyint(x[q] * inv);
        r = std::fmin(127.f, std::fmax(-127.f, r));
        v = int(r);
      }
      if (p.rowsum && q < p.k) p.rowsum[i * p.groups + q / p.group] += v;
      o[q] = uint8_t(p.shift128 ? v + 128 : int8_t(v));
    }
    p.scale[i] = finite ? s : NAN;  // a NaN / Inf input makes the row's outputs NaN
  }
}

}  // namespace sparq
