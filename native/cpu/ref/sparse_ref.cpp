// sparse_ref.cpp - scalar references of the sparse kernels (f64 / int64 sums
// over each row's stored values): the oracles of x86/sparse_avx2.cpp and
// x86/sparse_avx512.cpp.
#include <algorithm>
#include <cassert>
#include <vector>

#include "../half.h"
#include "../sparse.h"

namespace sparq {

void sprow_ref(const SparseWeight& s, int64_t j, int8_t* out) { sparse_row_i8(s, j, out); }

namespace {

// int4: exact int32 sums per group, each scaled in f32, summed in group order
void spmv4_ref(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t m = a.m, G = s.qgroups();
  std::vector<int32_t> acc(size_t(8 * G));
  for (int64_t j = j0; j < j1; ++j) {
    std::fill(acc.begin(), acc.end(), 0);
    sparse_for_row(s, j, [&](int64_t c, float v) {
      if (c >= s.k) return;  // nm padding past k
      for (int64_t i = 0; i < m; ++i) acc[size_t(i * G + c / s.group)] += int32_t(v) * a.xq[i * a.ldq + c];
    });
    for (int64_t i = 0; i < m; ++i) {
      float sum = 0.f;
      for (int64_t g = 0; g < G; ++g) sum += float(acc[size_t(i * G + g)]) * half_to_float(s.scale4[size_t(j * G + g)]);
      a.y[i * s.n + j] = sum * a.xs[i] + (a.bias ? a.bias[j] : 0.f);
    }
  }
}

}  // namespace

void spmv_ref(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  assert(1 <= a.m && a.m <= 8 && 0 <= j0 && j0 <= j1 && j1 <= s.n);  // acc[8]
  if (s.int4) return spmv4_ref(s, a, j0, j1);
  const int64_t m = a.m;
  for (int64_t j = j0; j < j1; ++j) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t iacc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    sparse_for_row(s, j, [&](int64_t c, float v) {
      if (c >= s.k) return;  // nm padding past k
      for (int64_t i = 0; i < m; ++i) {
        if (s.int8) iacc[i] += int64_t(v) * a.xq[i * a.ldq + c];
        else acc[i] += double(v) * a.x[i * s.k + c];
      }
    });
    for (int64_t i = 0; i < m; ++i)
      a.y[i * s.n + j] = s.int8 ? sparse_q_out(iacc[i], a.xs[i], s.scale[size_t(j)], a.bias, j) : float(acc[i] + (a.bias ? a.bias[j] : 0.f));
  }
}

void spmmt_ref(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t m = a.m;
  std::vector<double> acc(static_cast<size_t>(m));
  std::vector<int64_t> iacc(static_cast<size_t>(m));
  for (int64_t j = j0; j < j1; ++j) {
    std::fill(acc.begin(), acc.end(), 0.0);
    std::fill(iacc.begin(), iacc.end(), 0);
    sparse_for_row(s, j, [&](int64_t c, float v) {
      if (c >= s.k) return;
      for (int64_t i = 0; i < m; ++i) {
        if (s.int8) iacc[size_t(i)] += int64_t(v) * a.xqt[c * m + i];
        else acc[size_t(i)] += double(v) * a.x[c * m + i];
      }
    });
    for (int64_t i = 0; i < m; ++i)
      a.y[j * m + i] = s.int8 ? sparse_q_out(iacc[size_t(i)], a.xs[i], s.scale[size_t(j)], a.bias, j)
                              : float(acc[size_t(i)] + (a.bias ? a.bias[j] : 0.f));
  }
}

}  // namespace sparq
