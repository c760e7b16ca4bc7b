// sgemm_ref.cpp - scalar oracles for the f32 GEMM (packed B) and row-dot GEMV.
#include "../kernels.h"

namespace sparq {

void sgemm_ref(const SgemmArgs& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  for (int64_t i = m0; i < m1; ++i)
    for (int64_t nb = nb0; nb < nb1; ++nb)
      for (int64_t jj = 0; jj < 16; ++jj) {
        const int64_t j = nb * 16 + jj;
        if (j >= p.n) break;
        float acc = 0.f;
        for (int64_t q = 0; q < p.k; ++q) acc += p.a[i * p.lda + q] * p.bp[(nb * p.k + q) * 16 + jj];
        if (p.bias) acc += p.bias[j];
        p.c[i * p.ldc + j] = p.accumulate ? p.c[i * p.ldc + j] + acc : acc;
      }
}

void sgemv_ref(const SgemvArgs& p, int64_t n0, int64_t n1) {
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = n0; j < n1; ++j) {
      float acc = 0.f;
      for (int64_t q = 0; q < p.k; ++q) acc += p.x[i * p.ldx + q] * p.w[j * p.ldw + q];
      if (p.bias) acc += p.bias[j];
      p.c[i * p.ldc + j] = acc;
    }
}

}  // namespace sparq
