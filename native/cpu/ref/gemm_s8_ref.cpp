// gemm_s8_ref.cpp - scalar oracle for the int8 GEMM contract in kernels.h.
// Reads the packed n16k4 layout element by element; every ISA path is checked
// against this function.
#include <algorithm>

#include "../kernels.h"

namespace sparq {

void gemm_s8_ref(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  const PackedS8& b = *p.b;
  const int64_t ksteps = b.k_pad / kS8StepK;
  for (int64_t i = m0; i < m1; ++i) {
    const int8_t* a = reinterpret_cast<const int8_t*>(p.a + i * p.lda);
    for (int64_t nb = nb0; nb < nb1; ++nb) {
      const int8_t* blk = b.data + nb * ksteps * kS8BlockBytes;
      for (int64_t jj = 0; jj < kS8BlockN; ++jj) {
        const int64_t j = nb * kS8BlockN + jj;
        if (j >= b.n) break;
        if (p.ci) {
          int64_t acc = 0;
          for (int64_t kk = 0; kk < b.k; ++kk)
            acc += int32_t(a[kk]) * blk[(kk / 4) * 64 + jj * 4 + (kk % 4)];
          p.ci[i * p.ldc + j] = int32_t(acc);
          continue;
        }
        float sum = 0.f;
        for (int64_t g = 0; g < b.groups; ++g) {
          const int64_t k0 = g * b.group, k1 = k0 + b.group < b.k ? k0 + b.group : b.k;
          int32_t acc = 0;
          for (int64_t kk = k0; kk < k1; ++kk)
            acc += int32_t(a[kk]) * blk[(kk / 4) * 64 + jj * 4 + (kk % 4)];
          const float sc = b.scales[s8_group_index(nb, g, b.groups) + jj];
          sum += float(acc) * (p.a_gscale ? sc * p.a_gscale[i * b.groups + g] : sc);
        }
        sum *= p.a_scale[i];
        if (p.bias) sum += p.bias[j];
        p.c[i * p.ldc + j] = sum;
      }
    }
  }
}

bool pack_s8_block_ref(const int8_t* rows, int64_t ld, int64_t k_pad, int64_t group, int64_t groups, int8_t* blk,
                       int32_t* colsum) {
  bool m128 = false;
  for (int64_t jj = 0; jj < kS8BlockN; ++jj) {
    const int8_t* row = rows + jj * ld;
    for (int64_t c = 0; c < k_pad; ++c) {
      blk[(c / kS8StepK * kS8BlockN + jj) * kS8StepK + c % kS8StepK] = row[c];
      if (row[c] == -128) m128 = true;
    }
    for (int64_t g = 0; g < groups; ++g) {
      int32_t sum = 0;
      for (int64_t c = g * group; c < std::min(k_pad, (g + 1) * group); ++c) sum += row[c];
      colsum[g * kS8BlockN + jj] = sum;
    }
  }
  return m128;
}

}  // namespace sparq
