// sparse_avx2.cpp - sparse x dense with AVX2 + FMA.
// m <= 8 (decode): csr and N:M gather 8 activations per step at the stored
// columns (vpgatherdd); bitmask expands 8 packed values per mask byte into
// their lanes with a permutation table (vpermps) and multiplies 8 contiguous
// activations - no gather, and each weight byte is read once.
// m > 8: a row's nonzeros are decoded once, then each one adds value x
// xT[column, 0..m) into 32-wide accumulator strips.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "../sparse.h"
#include "avx2_math.h"

namespace sparq {
namespace {
using namespace avx2;

// For a mask byte b: lane l takes packed value number popcount(b & ((1 << l) - 1)).
struct ExpandTable {
  alignas(32) int32_t perm[256][8];
  alignas(32) int32_t keep[256][8];
  ExpandTable() {
    for (int b = 0; b < 256; ++b)
      for (int l = 0, c = 0; l < 8; ++l) {
        const bool on = b >> l & 1;
        perm[b][l] = on ? c : 0;
        keep[b][l] = on ? -1 : 0;
        c += on;
      }
  }
};
const ExpandTable& table() {
  static const ExpandTable t;
  return t;
}

inline __m256 vals8(const SparseWeight& s, int64_t p) {
  if (s.int8)
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s.vq.data() + p))));
  return _mm256_loadu_ps(s.vf.data() + p);
}

// first n (0..8) lanes set
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// acc[i] += vals . x_i[cols] for stored values [p, p + cnt). Columns: csr reads
// them (int32); N:M (N and M powers of two) derives them in registers from the
// in-group index: column = (q / N) * M + idx[q].
template <int MR, bool NM>
inline void gather_dot(const SparseWeight& s, const float* x, int64_t k, int64_t p, const int32_t* cols, int64_t cnt, __m256* acc) {
  const int ln = NM ? __builtin_ctz(unsigned(s.N)) : 0, lm = NM ? __builtin_ctz(unsigned(s.M)) : 0;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), kmax = _mm256_set1_epi32(int(k - 1));
  auto columns = [&](int64_t q) {
    if constexpr (NM) {
      const __m256i qi = _mm256_add_epi32(_mm256_set1_epi32(int(q)), lane);
      const __m256i id = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s.idx.data() + p + q)));
      // padding past k (a partial last group) reads column k - 1 with a zero value
      return _mm256_min_epi32(_mm256_add_epi32(_mm256_slli_epi32(_mm256_srli_epi32(qi, ln), lm), id), kmax);
    } else {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cols + q));
    }
  };
  __m256 acc2[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc2[i] = _mm256_setzero_ps();
  int64_t q = 0;
  // two steps in flight: gathers have long latency
  for (; q + 16 <= cnt; q += 16) {
    const __m256i c0 = columns(q), c1 = columns(q + 8);
    const __m256 v0 = vals8(s, p + q), v1 = vals8(s, p + q + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      acc[i] = _mm256_fmadd_ps(v0, _mm256_i32gather_ps(x + i * k, c0, 4), acc[i]);
      acc2[i] = _mm256_fmadd_ps(v1, _mm256_i32gather_ps(x + i * k, c1, 4), acc2[i]);
    }
  }
  for (; q < cnt; q += 8) {
    const __m256i mk = lanes(std::min<int64_t>(8, cnt - q));
    const __m256i ci = NM ? _mm256_and_si256(columns(q), mk) : _mm256_maskload_epi32(cols + q, mk);
    const __m256 v = _mm256_and_ps(vals8(s, p + q), _mm256_castsi256_ps(mk));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      acc[i] = _mm256_fmadd_ps(v, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x + i * k, ci, _mm256_castsi256_ps(mk), 4), acc[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i] = _mm256_add_ps(acc[i], acc2[i]);
}

template <int MR>
void spmv_rows(const SparseWeight& s, const float* x, const float* bias, float* y, int64_t j0, int64_t j1) {
  const int64_t k = s.k;
  const ExpandTable& T = table();
  for (int64_t j = j0; j < j1; ++j) {
    __m256 acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
    switch (s.format) {
      case SparseFormat::csr: {
        const int64_t p0 = s.row_ptr[size_t(j)];
        gather_dot<MR, false>(s, x, k, p0, s.col.data() + p0, s.row_ptr[size_t(j + 1)] - p0, acc);
        break;
      }
      case SparseFormat::nm: {
        const int64_t per = s.groups() * s.N;
        gather_dot<MR, true>(s, x, k, j * per, nullptr, per, acc);
        break;
      }
      case SparseFormat::bitmask: {
        int64_t p = s.row_ptr[size_t(j)];
        const uint32_t* mw = s.mask.data() + j * s.words();
        for (int64_t w = 0; w < s.words(); ++w) {
          uint32_t bits = mw[w];
          for (int b8 = 0; bits; ++b8, bits >>= 8) {
            const uint32_t b = bits & 0xff;
            if (!b) continue;
            const int64_t c0 = w * 32 + b8 * 8;
            const __m256 v = _mm256_and_ps(_mm256_permutevar8x32_ps(vals8(s, p), _mm256_load_si256(reinterpret_cast<const __m256i*>(T.perm[b]))),
                                           _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(T.keep[b]))));
            p += __builtin_popcount(b);
            if (c0 + 8 <= k) {
#pragma GCC unroll 8
              for (int i = 0; i < MR; ++i) acc[i] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + i * k + c0), acc[i]);
            } else {
              const __m256i mk = lanes(k - c0);
#pragma GCC unroll 8
              for (int i = 0; i < MR; ++i) acc[i] = _mm256_fmadd_ps(v, _mm256_maskload_ps(x + i * k + c0, mk), acc[i]);
            }
          }
        }
        break;
      }
    }
    const float sc = s.int8 ? s.scale[size_t(j)] : 1.f, b = bias ? bias[j] : 0.f;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) y[i * s.n + j] = hsum(acc[i]) * sc + b;
  }
}

}  // namespace

void spmv_avx2(const SparseWeight& s, const float* x, int64_t m, const float* bias, float* y, int64_t j0, int64_t j1) {
  switch (m) {
    case 1: spmv_rows<1>(s, x, bias, y, j0, j1); break;
    case 2: spmv_rows<2>(s, x, bias, y, j0, j1); break;
    case 3: spmv_rows<3>(s, x, bias, y, j0, j1); break;
    case 4: spmv_rows<4>(s, x, bias, y, j0, j1); break;
    case 5: spmv_rows<5>(s, x, bias, y, j0, j1); break;
    case 6: spmv_rows<6>(s, x, bias, y, j0, j1); break;
    case 7: spmv_rows<7>(s, x, bias, y, j0, j1); break;
    default: spmv_rows<8>(s, x, bias, y, j0, j1); break;
  }
}

void spmmt_avx2(const SparseWeight& s, const float* xt, int64_t m, const float* bias, float* yt, int64_t j0, int64_t j1) {
  std::vector<int64_t> cols;
  std::vector<float> vals;
  cols.reserve(size_t(s.k));
  vals.reserve(size_t(s.k));
  for (int64_t j = j0; j < j1; ++j) {
    // decode row j once
    cols.clear();
    vals.clear();
    switch (s.format) {
      case SparseFormat::csr:
        for (int64_t p = s.row_ptr[size_t(j)]; p < s.row_ptr[size_t(j + 1)]; ++p) {
          cols.push_back(s.col[size_t(p)]);
          vals.push_back(s.int8 ? float(s.vq[size_t(p)]) : s.vf[size_t(p)]);
        }
        break;
      case SparseFormat::bitmask: {
        int64_t p = s.row_ptr[size_t(j)];
        const uint32_t* mw = s.mask.data() + j * s.words();
        for (int64_t w = 0; w < s.words(); ++w)
          for (uint32_t bits = mw[w]; bits; bits &= bits - 1, ++p) {
            cols.push_back(w * 32 + __builtin_ctz(bits));
            vals.push_back(s.int8 ? float(s.vq[size_t(p)]) : s.vf[size_t(p)]);
          }
        break;
      }
      case SparseFormat::nm: {
        const int64_t per = s.groups() * s.N, p0 = j * per;
        for (int64_t q = 0; q < per; ++q) {
          const int64_t c = (q / s.N) * s.M + s.idx[size_t(p0 + q)];
          const float v = s.int8 ? float(s.vq[size_t(p0 + q)]) : s.vf[size_t(p0 + q)];
          if (c < s.k && v != 0.f) {
            cols.push_back(c);
            vals.push_back(v);
          }
        }
        break;
      }
    }
    const float sc = s.int8 ? s.scale[size_t(j)] : 1.f;
    const __m256 vsc = _mm256_set1_ps(sc), vb = _mm256_set1_ps(bias ? bias[j] : 0.f);
    float* out = yt + j * m;
    const size_t nz = cols.size();
    int64_t i0 = 0;
    for (; i0 + 32 <= m; i0 += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t q = 0; q < nz; ++q) {
        const __m256 v = _mm256_set1_ps(vals[q]);
        const float* xr = xt + cols[q] * m + i0;
        a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr), a0);
        a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8), a1);
        a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 16), a2);
        a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 24), a3);
      }
      _mm256_storeu_ps(out + i0, _mm256_fmadd_ps(a0, vsc, vb));
      _mm256_storeu_ps(out + i0 + 8, _mm256_fmadd_ps(a1, vsc, vb));
      _mm256_storeu_ps(out + i0 + 16, _mm256_fmadd_ps(a2, vsc, vb));
      _mm256_storeu_ps(out + i0 + 24, _mm256_fmadd_ps(a3, vsc, vb));
    }
    for (; i0 < m; i0 += 8) {
      const __m256i mk = lanes(m - i0);
      __m256 a = _mm256_setzero_ps();
      for (size_t q = 0; q < nz; ++q) a = _mm256_fmadd_ps(_mm256_set1_ps(vals[q]), _mm256_maskload_ps(xt + cols[q] * m + i0, mk), a);
      _mm256_maskstore_ps(out + i0, mk, _mm256_fmadd_ps(a, vsc, vb));
    }
  }
}

}  // namespace sparq
