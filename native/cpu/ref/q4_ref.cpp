// q4_ref.cpp - the scalar reference of the 4-bit GEMV (int32 sums per group,
// scaled in f32): the oracle of x86/q4_avx2.cpp.
#include <algorithm>

#include "../q4.h"

namespace sparq {

void q4_gemv_ref(const Q4Args& a, int64_t j0, int64_t j1) {
  const PackedQ4& p = *a.w;
  for (int64_t j = j0; j < j1; ++j)
    for (int64_t i = 0; i < a.m; ++i) {
      float acc = 0.f;
      for (int64_t g = 0; g < p.groups; ++g) {
        int32_t s = 0;
        for (int64_t c = g * p.group; c < std::min(p.k, g * p.group + p.group); ++c) s += q4_value(p, j, c) * a.xq[i * a.ldq + c];
        acc += float(s) * p.scale[size_t(j * p.groups + g)];
      }
      a.y[i * p.n + j] = acc * a.xs[i];
    }
}

}  // namespace sparq
