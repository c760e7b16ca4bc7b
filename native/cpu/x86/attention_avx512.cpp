// attention_avx512.cpp - the "tile" shape of the attention task (12+ query
// rows: prefill) with 16-lane AVX-512 vectors; fewer rows (decode, bound by
// memory, not arithmetic) go to the AVX2 row path. Same algorithm as
// attention_avx2.cpp: S^T = K . Q^T by an 8-key x 32-query register tile that
// broadcasts key elements from the key rows, the online softmax down the
// columns of S^T 16 query rows per vector, then P.V as an 8-row x 32-column
// tile. f16 / int8 key and value tiles are converted once into f32 scratch.
// Checked against attention_ref.cpp by test_emulated_isa (intrinsics emulated
// where the CPU lacks AVX-512).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../half.h"
#include "../kernels.h"

// GCC 12's avx512fintrin.h seeds max / min / cvtps / roundscale / slli with
// _mm512_undefined_*() and then warns about it once inlined: not our variables.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace sparq {
namespace {

constexpr int64_t B = kAttnBlock;
constexpr int64_t kTileRows = 12;  // as the AVX2 kernel: fewer rows use the row path

// e^x for x in [-87.3, 88.7] (clamped above), exactly 0 below -87.3 (masked scores).
inline __m512 exp512(__m512 x0) {
  const __m512 x = _mm512_min_ps(_mm512_max_ps(x0, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __mmask16 live = _mm512_cmp_ps_mask(x0, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
  return _mm512_maskz_mov_ps(live, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}

// Key / value rows [j0, j0 + nb) as f32 [nb, ld] (scaled, zero-padded to ld).
void convert_tile(KvType type, const void* src, const float* scale, int64_t j0, int64_t nb, int64_t d, int64_t ld, float* dst) {
  for (int64_t jj = 0; jj < nb; ++jj) {
    const int64_t row = (j0 + jj) * d;
    float* y = dst + jj * ld;
    for (int64_t i = 0; i < d; ++i) {
      switch (type) {
        case KvType::f32: y[i] = static_cast<const float*>(src)[row + i]; break;
        case KvType::f16: y[i] = half_to_float(static_cast<const uint16_t*>(src)[row + i]); break;
        case KvType::i8: y[i] = float(static_cast<const int8_t*>(src)[row + i]) * scale[j0 + jj]; break;
      }
    }
    for (int64_t i = d; i < ld; ++i) y[i] = 0.f;
  }
}

// S^T[j, r] for KR keys x 16 NQ queries: kb rows ldk apart, qt [d, rp].
template <int KR, int NQ>
inline void qk_tile(const float* kb, int64_t ldk, const float* qt, int64_t rp, int64_t d, float* st) {
  __m512 acc[KR][NQ];
#pragma GCC unroll 8
  for (int i = 0; i < KR; ++i)
#pragma GCC unroll 2
    for (int n = 0; n < NQ; ++n) acc[i][n] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    __m512 qv[NQ];
#pragma GCC unroll 2
    for (int n = 0; n < NQ; ++n) qv[n] = _mm512_loadu_ps(qt + c * rp + 16 * n);
#pragma GCC unroll 8
    for (int i = 0; i < KR; ++i) {
      const __m512 kv = _mm512_set1_ps(kb[i * ldk + c]);
#pragma GCC unroll 2
      for (int n = 0; n < NQ; ++n) acc[i][n] = _mm512_fmadd_ps(kv, qv[n], acc[i][n]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < KR; ++i)
#pragma GCC unroll 2
    for (int n = 0; n < NQ; ++n) _mm512_storeu_ps(st + i * rp + 16 * n, acc[i][n]);
}

template <int NQ>
void qk_keys(int kr, const float* kb, int64_t ldk, const float* qt, int64_t rp, int64_t d, float* st) {
  switch (kr) {
    case 1: qk_tile<1, NQ>(kb, ldk, qt, rp, d, st); break;
    case 2: qk_tile<2, NQ>(kb, ldk, qt, rp, d, st); break;
    case 3: qk_tile<3, NQ>(kb, ldk, qt, rp, d, st); break;
    case 4: qk_tile<4, NQ>(kb, ldk, qt, rp, d, st); break;
    case 5: qk_tile<5, NQ>(kb, ldk, qt, rp, d, st); break;
    case 6: qk_tile<6, NQ>(kb, ldk, qt, rp, d, st); break;
    case 7: qk_tile<7, NQ>(kb, ldk, qt, rp, d, st); break;
    default: qk_tile<8, NQ>(kb, ldk, qt, rp, d, st); break;
  }
}

// o[r, c0 .. c0 + 16 NV) = o * alpha[r] + sum_j pt[j, r] v[j, c0 ..]  (pt row stride rp)
template <int MR, int NV>
inline void pv_tile(float* o, int64_t ldo, const float* alpha, const float* pt, int64_t rp, const float* v, int64_t ldv,
                    int64_t nb, int64_t c0) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m512 al = _mm512_set1_ps(alpha[i]);
#pragma GCC unroll 2
    for (int n = 0; n < NV; ++n) acc[i][n] = _mm512_mul_ps(_mm512_loadu_ps(o + i * ldo + c0 + 16 * n), al);
  }
  for (int64_t j = 0; j < nb; ++j) {
    __m512 vv[NV];
#pragma GCC unroll 2
    for (int n = 0; n < NV; ++n) vv[n] = _mm512_loadu_ps(v + j * ldv + c0 + 16 * n);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 pp = _mm512_set1_ps(pt[j * rp + i]);
#pragma GCC unroll 2
      for (int n = 0; n < NV; ++n) acc[i][n] = _mm512_fmadd_ps(pp, vv[n], acc[i][n]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int n = 0; n < NV; ++n) _mm512_storeu_ps(o + i * ldo + c0 + 16 * n, acc[i][n]);
}

template <int NV>
void pv_rows(int mr, float* o, int64_t ldo, const float* alpha, const float* pt, int64_t rp, const float* v, int64_t ldv,
             int64_t nb, int64_t c0) {
  switch (mr) {
    case 1: pv_tile<1, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    case 2: pv_tile<2, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    case 3: pv_tile<3, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    case 4: pv_tile<4, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    case 5: pv_tile<5, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    case 6: pv_tile<6, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    case 7: pv_tile<7, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
    default: pv_tile<8, NV>(o, ldo, alpha, pt, rp, v, ldv, nb, c0); break;
  }
}

}  // namespace

void attn_avx512(const AttnTaskArgs& a) {
  if (a.rows < kTileRows) {
    attn_avx2(a);
    return;
  }
  const int64_t rows = a.rows, d = a.d;
  const int64_t rp = (rows + 15) / 16 * 16, dp = (d + 15) / 16 * 16;
  float* w = a.work;  // layout within attn_work_floats(rows, d)
  float* qt = w; w += rp * dp;
  float* o = w; w += rp * dp;
  float* st = w; w += B * rp * 2;
  float* kc = w; w += B * dp;
  float* vc = w; w += B * dp;
  float* m = w; w += rp;
  float* l = w; w += rp;
  float* alpha = w; w += rp;
  float* limf = w;
  float min_limit = INFINITY;
  for (int64_t r = 0; r < rp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
    limf[r] = r < rows ? float(a.limit[r]) : 0.f;
    if (r < rows) min_limit = std::min(min_limit, limf[r]);
  }
  std::fill(o, o + rows * dp, 0.f);
  for (int64_t c = 0; c < d; ++c)
    for (int64_t r = 0; r < rp; ++r) qt[c * rp + r] = r < rows ? a.q[r][c] * a.scale : 0.f;
  const bool k_direct = a.type == KvType::f32, v_direct = a.type == KvType::f32 && d % 16 == 0;
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int64_t j0 = a.j0; j0 < a.j1; j0 += B) {
    const int64_t nb = std::min(B, a.j1 - j0);
    const float* kb = k_direct ? static_cast<const float*>(a.k) + j0 * d : kc;
    if (!k_direct) convert_tile(a.type, a.k, a.k_scale, j0, nb, d, d, kc);
    for (int64_t jj = 0; jj < nb; jj += 8) {
      const int kr = int(std::min<int64_t>(8, nb - jj));
      for (int64_t r0 = 0; r0 < rp; r0 += 32) {
        if (rp - r0 >= 32) qk_keys<2>(kr, kb + jj * d, d, qt + r0, rp, d, st + jj * rp + r0);
        else qk_keys<1>(kr, kb + jj * d, d, qt + r0, rp, d, st + jj * rp + r0);
      }
    }
    // online softmax down the columns of S^T, 16 query rows per vector
    if (a.mask)
      for (int64_t jj = 0; jj < nb; ++jj)
        for (int64_t r = 0; r < rows; ++r) st[jj * rp + r] += a.mask[r][j0 + jj];
    const bool causal = float(j0 + nb) > min_limit;
    for (int64_t r0 = 0; r0 < rp; r0 += 16) {
      const __m512 lim = _mm512_loadu_ps(limf + r0);
      __m512 mx = ninf;
      for (int64_t jj = 0; jj < nb; ++jj) {
        __m512 sv = _mm512_loadu_ps(st + jj * rp + r0);
        if (causal) {
          const __mmask16 vis = _mm512_cmp_ps_mask(_mm512_set1_ps(float(j0 + jj)), lim, _CMP_LT_OQ);
          sv = _mm512_mask_blend_ps(vis, ninf, sv);
          _mm512_storeu_ps(st + jj * rp + r0, sv);
        }
        mx = _mm512_max_ps(mx, sv);
      }
      const __m512 mold = _mm512_loadu_ps(m + r0);
      const __m512 mnew = _mm512_max_ps(mold, mx);
      const __m512 msafe = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mnew, ninf, _CMP_EQ_OQ), mnew, _mm512_setzero_ps());
      const __m512 al = exp512(_mm512_sub_ps(mold, msafe));
      __m512 sum = _mm512_setzero_ps();
      for (int64_t jj = 0; jj < nb; ++jj) {
        const __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(st + jj * rp + r0), msafe));
        _mm512_storeu_ps(st + jj * rp + r0, p);
        sum = _mm512_add_ps(sum, p);
      }
      _mm512_storeu_ps(l + r0, _mm512_fmadd_ps(_mm512_loadu_ps(l + r0), al, sum));
      _mm512_storeu_ps(m + r0, mnew);
      _mm512_storeu_ps(alpha + r0, al);
    }
    const float* vb = v_direct ? static_cast<const float*>(a.v) + j0 * d : vc;
    const int64_t ldv = v_direct ? d : dp;
    if (!v_direct) convert_tile(a.type, a.v, a.v_scale, j0, nb, d, dp, vc);
    for (int64_t c0 = 0; c0 < dp; c0 += 32) {
      const int nv = dp - c0 >= 32 ? 2 : 1;
      for (int64_t r0 = 0; r0 < rows; r0 += 8) {
        const int mr = int(std::min<int64_t>(8, rows - r0));
        if (nv == 2) pv_rows<2>(mr, o + r0 * dp, dp, alpha + r0, st + r0, rp, vb, ldv, nb, c0);
        else pv_rows<1>(mr, o + r0 * dp, dp, alpha + r0, st + r0, rp, vb, ldv, nb, c0);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(a.o + r * d, o + r * dp, size_t(d) * 4);
    a.m[r] = m[r];
    a.l[r] = l[r];
  }
}

}  // namespace sparq
