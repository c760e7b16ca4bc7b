// attention_avx2.cpp - one attention task (a set of query rows sharing a
// key/value head, over a range of keys) with AVX2 + FMA + F16C. Keys stream
// through in tiles of kAttnBlock; each tile: scores, online softmax, P.V.
//
// Two shapes of the same algorithm:
// - "tile" (12+ rows: prefill). Scores are computed transposed,
//   S^T[j, r] = K[j, :] . Q^T[:, r], by a 6-key x 16-query register tile that
//   broadcasts key elements straight from the key rows and loads the
//   pre-transposed queries. The softmax then runs down the columns of S^T,
//   8 query rows per vector, with no transposes anywhere. P.V is a
//   rows x 16 register tile over the value rows.
// - "row" (up to 11 rows: decode, GQA groups). Pairs of query rows against
//   4 keys at a time (a single row: 8 keys) with a transposing horizontal
//   reduction, reading the key/value rows in place. With one query row, f16 /
//   int8 rows are converted in registers as they stream from memory (int8
//   scales fold into the scores and into P), so each byte is read once.
// Otherwise f16 / int8 tiles are converted once into f32 scratch.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "../kernels.h"
#include "avx2_math.h"

namespace sparq {
namespace {
using namespace avx2;

constexpr int64_t B = kAttnBlock;
// Rows from which the transposed tile path beats streaming rows: measured on
// Zen 3 (decode with 8 rows per key/value head is faster on the row path, since
// it reads each key once with fewer instructions; 12+ rows compute-bound).
constexpr int64_t kTileRows = 12;

template <KvType T>
inline const void* at(const void* base, int64_t idx) {
  constexpr int64_t es = kKvBytes<T>;
  return static_cast<const char*>(base) + idx * es;
}

template <KvType T>
inline __m256 ld8(const void* base, int64_t idx) {
  if constexpr (T == KvType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + idx);
  } else if constexpr (T == KvType::f16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + idx)));
  } else {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(base) + idx));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
}

// First n (0..8) floats of p, zeros elsewhere; never touches memory past p + n.
inline __m256 load_partial(const float* p, int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i msk = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), idx);
  return _mm256_maskload_ps(p, msk);
}

// r[k] = sum of the lanes of a[k], k = 0..7.
inline __m256 reduce8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Converts key/value rows [j0, j0 + nb) to f32 [nb, dp] (scaled, zero-padded).
// avail: rows readable from j0 on; rows 8 ahead are prefetched as we go.
template <KvType T>
void convert_tile(const void* src, const float* scale, int64_t j0, int64_t nb, int64_t d, int64_t dp, float* dst,
                  int64_t avail = 0) {
  constexpr int64_t es = kKvBytes<T>;
  for (int64_t jj = 0; jj < nb; ++jj) {
    const int64_t row = (j0 + jj) * d;
    if (jj + 8 < avail)
      for (int64_t off = 0; off < d * es; off += 64) _mm_prefetch(static_cast<const char*>(at<T>(src, row + 8 * d)) + off, _MM_HINT_T0);
    float* y = dst + jj * dp;
    const __m256 s = _mm256_set1_ps(T == KvType::i8 ? scale[j0 + jj] : 1.f);
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(ld8<T>(src, row + i), s));
    for (; i < d; ++i) {
      float v;
      if constexpr (T == KvType::f32) v = static_cast<const float*>(src)[row + i];
      else if constexpr (T == KvType::f16) v = _cvtsh_ss(static_cast<const uint16_t*>(src)[row + i]);
      else v = float(static_cast<const int8_t*>(src)[row + i]);
      y[i] = T == KvType::i8 ? v * scale[j0 + jj] : v;
    }
    for (; i < dp; ++i) y[i] = 0.f;
  }
}

// --- P.V: o[r, c0 .. c0 + 8NV) = o * alpha[r] + sum_j p[r, j] v[j, c0 ..] ----------
// p[r, j] at p[r * prs + j * pjs]; v row j at element (j * ldv) of type T.
template <int MR, int NV, KvType T>
inline void pv_tile(float* o, int64_t ldo, const float* alpha, const float* p, int64_t prs, int64_t pjs,
                    const void* v, int64_t ldv, int64_t nb, int64_t c0, const char* pre = nullptr, int64_t pre_lines = 0) {
  __m256 acc[MR][NV];
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m256 al = _mm256_broadcast_ss(alpha + i);
    #pragma GCC unroll 8
    for (int n = 0; n < NV; ++n) acc[i][n] = _mm256_mul_ps(_mm256_loadu_ps(o + i * ldo + c0 + 8 * n), al);
  }
  constexpr int64_t strip = 8 * NV * kKvBytes<T>;
  const int64_t pre_per = nb > 0 ? (pre_lines + nb - 1) / nb : 0;
  for (int64_t j = 0; j < nb; ++j) {
    if (j + 8 < nb)  // the strip 8 rows ahead into L1 (a decode waits on these loads)
      for (int64_t off = 0; off < strip; off += 64) __builtin_prefetch(static_cast<const char*>(at<T>(v, (j + 8) * ldv + c0)) + off, 0, 3);
    // this call's share of the next tile's values into L2, spread over its rows
    for (int64_t l = j * pre_per; l < (j + 1) * pre_per && l < pre_lines; ++l) __builtin_prefetch(pre + 64 * l, 0, 2);
    __m256 vv[NV];
    #pragma GCC unroll 8
    for (int n = 0; n < NV; ++n) vv[n] = ld8<T>(v, j * ldv + c0 + 8 * n);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 pp = _mm256_broadcast_ss(p + i * prs + j * pjs);
      #pragma GCC unroll 8
      for (int n = 0; n < NV; ++n) acc[i][n] = _mm256_fmadd_ps(pp, vv[n], acc[i][n]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 8
    for (int n = 0; n < NV; ++n) _mm256_storeu_ps(o + i * ldo + c0 + 8 * n, acc[i][n]);
}

template <int NV, KvType T>
void pv_rows(int mr, float* o, int64_t ldo, const float* alpha, const float* p, int64_t prs, int64_t pjs,
             const void* v, int64_t ldv, int64_t nb, int64_t c0, const char* pre, int64_t pre_lines) {
  switch (mr) {
    case 1: pv_tile<1, NV, T>(o, ldo, alpha, p, prs, pjs, v, ldv, nb, c0, pre, pre_lines); break;
    case 2: if constexpr (NV <= 4) pv_tile<2, NV, T>(o, ldo, alpha, p, prs, pjs, v, ldv, nb, c0, pre, pre_lines); break;
    case 3: if constexpr (NV <= 4) pv_tile<3, NV, T>(o, ldo, alpha, p, prs, pjs, v, ldv, nb, c0, pre, pre_lines); break;
    case 4: if constexpr (NV <= 3) pv_tile<4, NV, T>(o, ldo, alpha, p, prs, pjs, v, ldv, nb, c0, pre, pre_lines); break;
    case 5: if constexpr (NV <= 2) pv_tile<5, NV, T>(o, ldo, alpha, p, prs, pjs, v, ldv, nb, c0, pre, pre_lines); break;
    case 6: if constexpr (NV <= 2) pv_tile<6, NV, T>(o, ldo, alpha, p, prs, pjs, v, ldv, nb, c0, pre, pre_lines); break;
  }
}

// All rows [0, rows) x columns [0, dp) (dp a multiple of 8). `wide`: 32-column
// strips and 3-row tiles (few rows); else 16-column strips and 6-row tiles.
// pre / pre_bytes: memory to bring into L2 meanwhile (the next tile's values),
// an even share per pass, spread by pv_tile over the rows it visits.
template <KvType T>
void pv(bool wide, int64_t rows, int64_t dp, float* o, int64_t ldo, const float* alpha, const float* p, int64_t prs,
        int64_t pjs, const void* v, int64_t ldv, int64_t nb, const char* pre = nullptr, int64_t pre_bytes = 0) {
  int64_t pre_lines = (pre_bytes + 63) / 64;
  for (int64_t c0 = 0; c0 < dp;) {
    const int64_t left = (dp - c0) / 8;
    // One row: 64-column strips, so each pass over the tile's value rows keeps
    // more cache lines in flight (decode waits on these loads).
    // f16 / int8 converted in registers: one row group where possible (each
    // group converts the values again), so 16-column strips from 4 rows up.
    const int want = rows == 1 && left >= 8 ? 8 : (wide && (T == KvType::f32 || rows <= 3)) ? 4 : 2;
    const int nv = int(std::min<int64_t>(left, want));
    // Row groups of at most mrmax (12 accumulators), as even as possible: a
    // lone last row would leave its few accumulators waiting on FMA latency.
    const int64_t mrmax = nv >= 8 ? 1 : nv >= 4 ? 3 : nv == 3 ? 4 : 6, groups = (rows + mrmax - 1) / mrmax;
    for (int64_t g = 0, r0 = 0; g < groups; ++g) {
      const int mr = int(rows / groups + (g < rows % groups ? 1 : 0));
      float* orow = o + r0 * ldo;
      const float* prow = p + r0 * prs;
      // an even share per pass (passes = column strips x row groups), spread by
      // pv_tile over its rows: a burst of them at once fills the miss queue
      const int64_t passes_left = (dp - c0 + 8 * nv - 1) / (8 * nv) * groups - g;
      const int64_t take = (pre_lines + passes_left - 1) / passes_left;
      switch (nv) {
        case 1: pv_rows<1, T>(mr, orow, ldo, alpha + r0, prow, prs, pjs, v, ldv, nb, c0, pre, take); break;
        case 2: pv_rows<2, T>(mr, orow, ldo, alpha + r0, prow, prs, pjs, v, ldv, nb, c0, pre, take); break;
        case 3: pv_rows<3, T>(mr, orow, ldo, alpha + r0, prow, prs, pjs, v, ldv, nb, c0, pre, take); break;
        case 4: pv_rows<4, T>(mr, orow, ldo, alpha + r0, prow, prs, pjs, v, ldv, nb, c0, pre, take); break;
        default: pv_rows<8, T>(mr, orow, ldo, alpha + r0, prow, prs, pjs, v, ldv, nb, c0, pre, take); break;
      }
      pre += 64 * take;
      pre_lines -= take;
      r0 += mr;
    }
    c0 += 8 * nv;
  }
}

// --- tile path: S^T[j, r] for KR keys x 8NQ queries ------------------------------
template <int KR, int NQ>
inline void qk_tile(const float* kb, int64_t ldk, const float* qt, int64_t rp, int64_t d, float* st) {
  __m256 acc[KR][NQ];
  #pragma GCC unroll 8
  for (int i = 0; i < KR; ++i)
    #pragma GCC unroll 8
    for (int n = 0; n < NQ; ++n) acc[i][n] = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    __m256 qv[NQ];
    #pragma GCC unroll 8
    for (int n = 0; n < NQ; ++n) qv[n] = _mm256_loadu_ps(qt + c * rp + 8 * n);
    #pragma GCC unroll 8
    for (int i = 0; i < KR; ++i) {
      const __m256 kv = _mm256_broadcast_ss(kb + i * ldk + c);
      #pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) acc[i][n] = _mm256_fmadd_ps(kv, qv[n], acc[i][n]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < KR; ++i)
    #pragma GCC unroll 8
    for (int n = 0; n < NQ; ++n) _mm256_storeu_ps(st + i * rp + 8 * n, acc[i][n]);
}

template <int NQ>
void qk_keys(int kr, const float* kb, int64_t ldk, const float* qt, int64_t rp, int64_t d, float* st) {
  switch (kr) {
    case 1: qk_tile<1, NQ>(kb, ldk, qt, rp, d, st); break;
    case 2: qk_tile<2, NQ>(kb, ldk, qt, rp, d, st); break;
    case 3: qk_tile<3, NQ>(kb, ldk, qt, rp, d, st); break;
    case 4: qk_tile<4, NQ>(kb, ldk, qt, rp, d, st); break;
    case 5: qk_tile<5, NQ>(kb, ldk, qt, rp, d, st); break;
    default: qk_tile<6, NQ>(kb, ldk, qt, rp, d, st); break;
  }
}

struct Ctx {
  const AttnTaskArgs* a;
  int64_t rows, d, dp, rp;
  float *qbuf, *o, *s, *kc, *vc, *m, *l, *alpha, *limf;
  float min_limit;
};

// Online-softmax update of the columns of S^T [nb, rp] (8 rows per vector);
// the scores become probabilities in place; alpha[r] = rescale of row r's past.
void softmax_cols(const Ctx& c, int64_t j0, int64_t nb) {
  const AttnTaskArgs& a = *c.a;
  float* st = c.s;
  if (a.mask)
    for (int64_t jj = 0; jj < nb; ++jj)
      for (int64_t r = 0; r < c.rows; ++r) st[jj * c.rp + r] += a.mask[r][j0 + jj];
  const bool causal = float(j0 + nb) > c.min_limit;
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t r0 = 0; r0 < c.rp; r0 += 8) {
    const __m256 lim = _mm256_loadu_ps(c.limf + r0);
    __m256 mx = ninf;
    for (int64_t jj = 0; jj < nb; ++jj) {
      __m256 sv = _mm256_loadu_ps(st + jj * c.rp + r0);
      if (causal) {
        sv = _mm256_blendv_ps(ninf, sv, _mm256_cmp_ps(_mm256_set1_ps(float(j0 + jj)), lim, _CMP_LT_OQ));
        _mm256_storeu_ps(st + jj * c.rp + r0, sv);
      }
      mx = _mm256_max_ps(mx, sv);
    }
    const __m256 mold = _mm256_loadu_ps(c.m + r0);
    const __m256 mnew = _mm256_max_ps(mold, mx);
    const __m256 msafe = _mm256_blendv_ps(mnew, _mm256_setzero_ps(), _mm256_cmp_ps(mnew, ninf, _CMP_EQ_OQ));
    const __m256 al = exp_ps_flush(_mm256_sub_ps(mold, msafe));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t jj = 0; jj < nb; ++jj) {
      const __m256 pv = exp_ps_flush(_mm256_sub_ps(_mm256_loadu_ps(st + jj * c.rp + r0), msafe));
      _mm256_storeu_ps(st + jj * c.rp + r0, pv);
      sum = _mm256_add_ps(sum, pv);
    }
    _mm256_storeu_ps(c.l + r0, _mm256_fmadd_ps(_mm256_loadu_ps(c.l + r0), al, sum));
    _mm256_storeu_ps(c.m + r0, mnew);
    _mm256_storeu_ps(c.alpha + r0, al);
  }
}

template <KvType T>
void run_tile(const Ctx& c) {
  const AttnTaskArgs& a = *c.a;
  const int64_t d = c.d, rp = c.rp;
  // Q^T [d, rp], scaled; padding rows zero.
  for (int64_t cc = 0; cc < d; ++cc)
    for (int64_t r = 0; r < rp; ++r) c.qbuf[cc * rp + r] = r < c.rows ? a.q[r][cc] * a.scale : 0.f;
  const bool v_direct = T == KvType::f32 && d % 8 == 0;
  for (int64_t j0 = a.j0; j0 < a.j1; j0 += B) {
    const int64_t nb = std::min(B, a.j1 - j0);
    const float* kb;
    int64_t ldk;
    if constexpr (T == KvType::f32) {
      kb = static_cast<const float*>(a.k) + j0 * d;
      ldk = d;
    } else {
      convert_tile<T>(a.k, a.k_scale, j0, nb, d, d, c.kc);
      kb = c.kc;
      ldk = d;
    }
    for (int64_t jj = 0; jj < nb; jj += 6) {
      const int kr = int(std::min<int64_t>(6, nb - jj));
      for (int64_t r0 = 0; r0 < rp; r0 += 16) {
        if (rp - r0 >= 16) qk_keys<2>(kr, kb + jj * ldk, ldk, c.qbuf + r0, rp, d, c.s + jj * rp + r0);
        else qk_keys<1>(kr, kb + jj * ldk, ldk, c.qbuf + r0, rp, d, c.s + jj * rp + r0);
      }
    }
    softmax_cols(c, j0, nb);
    if (v_direct) {
      pv<KvType::f32>(false, c.rows, c.dp, c.o, c.dp, c.alpha, c.s, 1, rp, at<KvType::f32>(a.v, j0 * d), d, nb);
    } else {
      convert_tile<T>(a.v, a.v_scale, j0, nb, d, c.dp, c.vc);
      pv<KvType::f32>(false, c.rows, c.dp, c.o, c.dp, c.alpha, c.s, 1, rp, c.vc, c.dp, nb);
    }
  }
}

// --- row path: few query rows, keys streamed once ----------------------------------
// s[r, jj] (row stride B) for rows x keys jj < nb; key row jj at element
// jj * ldk of k (type T); scale: int8 per-key scales of these keys, or nullptr.
// Scores of NR query rows (from row r) x NK keys at a time, NR * NK = 8
// accumulators: each key vector (converted once when T is f16 / int8) feeds
// all NR rows. s[r, jj] has row stride B; key row jj sits at element jj * ldk
// of k; scale: int8 per-key scales of these keys, or nullptr. The first group
// (r == 0) also prefetches: key rows 8 ahead into L1 (avail: rows readable
// from k on), and, when next_k is set, the next tile's key / value rows into L2
// (the out-of-order window alone keeps too few lines in flight for decode).
template <KvType T, int NR, int NK>
void qk_group(const Ctx& c, int64_t r, const void* k, int64_t ldk, const float* scale, int64_t nb, int64_t dp,
              int64_t avail, const char* next_k, int64_t next_v, int64_t next_rows) {
  static_assert(NR * NK == 8, "8 accumulators");
  constexpr int64_t es = kKvBytes<T>;
  const int64_t rb = ldk * es;
  for (int64_t jj = 0; jj < nb; jj += NK) {
    if (r == 0) attn_row_prefetch(static_cast<const char*>(k), rb, jj, NK, avail, next_k, next_v, next_rows);
    __m256 acc[8];
    int64_t row[NK];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int kk = 0; kk < NK; ++kk) row[kk] = std::min<int64_t>(jj + kk, nb - 1) * ldk;
    for (int64_t i = 0; i < dp; i += 8) {
      __m256 qv[NR];
#pragma GCC unroll 8
      for (int rr = 0; rr < NR; ++rr) qv[rr] = _mm256_loadu_ps(c.qbuf + (r + rr) * dp + i);
#pragma GCC unroll 8
      for (int kk = 0; kk < NK; ++kk) {
        const __m256 kv = ld8<T>(k, row[kk] + i);
#pragma GCC unroll 8
        for (int rr = 0; rr < NR; ++rr) acc[rr * NK + kk] = _mm256_fmadd_ps(kv, qv[rr], acc[rr * NK + kk]);
      }
    }
    const __m256 sv = reduce8(acc);  // lane rr * NK + kk
    if constexpr (NR == 1) {
      _mm256_storeu_ps(c.s + r * B + jj, scale ? _mm256_mul_ps(sv, load_partial(scale + jj, std::min<int64_t>(8, nb - jj))) : sv);
    } else {
      alignas(32) float t[8];
      _mm256_store_ps(t, sv);
#pragma GCC unroll 8
      for (int kk = 0; kk < NK; ++kk) {
        const float sc = scale ? scale[row[kk] / ldk] : 1.f;
#pragma GCC unroll 8
        for (int rr = 0; rr < NR; ++rr) c.s[(r + rr) * B + jj + kk] = t[rr * NK + kk] * sc;
      }
    }
  }
}

// All rows: groups of 4 rows (x 2 keys), then 2 (x 4 keys), then 1 (x 8 keys).
template <KvType T>
void qk_rows(const Ctx& c, const void* k, int64_t ldk, const float* scale, int64_t nb, int64_t dp, int64_t avail = 0,
             const char* next_k = nullptr, int64_t next_v = 0, int64_t next_rows = 0) {
  int64_t r = 0;
  for (; r + 4 <= c.rows; r += 4) qk_group<T, 4, 2>(c, r, k, ldk, scale, nb, dp, avail, next_k, next_v, next_rows);
  for (; r + 2 <= c.rows; r += 2) qk_group<T, 2, 4>(c, r, k, ldk, scale, nb, dp, avail, next_k, next_v, next_rows);
  for (; r < c.rows; ++r) qk_group<T, 1, 8>(c, r, k, ldk, scale, nb, dp, avail, next_k, next_v, next_rows);
}

// Online softmax along each row of s [rows, B]; pscale (int8 values read in
// place: their scales for these keys): p[r, jj] *= pscale[jj] after the sums.
void softmax_rows(const Ctx& c, int64_t j0, int64_t nb, const float* pscale) {
  const AttnTaskArgs& a = *c.a;
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  const int64_t nb8 = (nb + 7) / 8 * 8;
  for (int64_t r = 0; r < c.rows; ++r) {
    float* s = c.s + r * B;
    if (a.mask)
      for (int64_t jj = 0; jj < nb; ++jj) s[jj] += a.mask[r][j0 + jj];
    const int64_t vis = std::clamp<int64_t>(a.limit[r] - j0, 0, nb);
    for (int64_t jj = vis; jj < nb8; ++jj) s[jj] = -INFINITY;
    __m256 mx = ninf;
    for (int64_t jj = 0; jj < nb8; jj += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + jj));
    const float mold = c.m[r], mnew = std::max(mold, hmax(mx));
    c.m[r] = mnew;
    const float msafe = mnew == -INFINITY ? 0.f : mnew;
    const __m256 ms = _mm256_set1_ps(msafe);
    alignas(32) float al8[8];
    _mm256_store_ps(al8, exp_ps_flush(_mm256_set1_ps(mold - msafe)));
    c.alpha[r] = al8[0];
    __m256 sum = _mm256_setzero_ps();
    for (int64_t jj = 0; jj < nb8; jj += 8) {
      const __m256 p = exp_ps_flush(_mm256_sub_ps(_mm256_loadu_ps(s + jj), ms));
      sum = _mm256_add_ps(sum, p);
      _mm256_storeu_ps(s + jj, pscale ? _mm256_mul_ps(p, load_partial(pscale + jj, std::min<int64_t>(8, nb - jj))) : p);
    }
    c.l[r] = c.l[r] * al8[0] + hsum(sum);
  }
}

template <KvType T>
void run_rows(const Ctx& c) {
  const AttnTaskArgs& a = *c.a;
  const int64_t d = c.d, dp = c.dp;
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t i = 0; i < dp; ++i) c.qbuf[r * dp + i] = i < d ? a.q[r][i] * a.scale : 0.f;
  // Key / value rows are read in place (f16 / int8 converted in registers)
  // unless d % 8 != 0: then each tile is converted once into padded f32 scratch.
  const bool inplace = d % 8 == 0;
  for (int64_t j0 = a.j0; j0 < a.j1; j0 += B) {
    const int64_t nb = std::min(B, a.j1 - j0);
    if (inplace) {
      const int64_t jn = j0 + B;
      // the next tile: its keys into L2 during the scores, its values during P.V
      const int64_t next_rows = jn < a.j1 ? std::min(B, a.j1 - jn) : 0;
      qk_rows<T>(c, at<T>(a.k, j0 * d), d, T == KvType::i8 ? a.k_scale + j0 : nullptr, nb, dp, a.j1 - j0,
                 next_rows ? static_cast<const char*>(at<T>(a.k, jn * d)) : nullptr, 0, next_rows);
      softmax_rows(c, j0, nb, T == KvType::i8 ? a.v_scale + j0 : nullptr);
      pv<T>(true, c.rows, dp, c.o, dp, c.alpha, c.s, B, 1, at<T>(a.v, j0 * d), d, nb,
            next_rows ? static_cast<const char*>(at<T>(a.v, jn * d)) : nullptr,
            next_rows * d * kKvBytes<T>);
    } else {
      convert_tile<T>(a.k, a.k_scale, j0, nb, d, dp, c.kc, a.j1 - j0);
      qk_rows<KvType::f32>(c, c.kc, dp, nullptr, nb, dp);
      softmax_rows(c, j0, nb, nullptr);
      convert_tile<T>(a.v, a.v_scale, j0, nb, d, dp, c.vc, a.j1 - j0);
      pv<KvType::f32>(true, c.rows, dp, c.o, dp, c.alpha, c.s, B, 1, c.vc, dp, nb);
    }
  }
}

}  // namespace

void attn_avx2(const AttnTaskArgs& a) {
  Ctx c;
  c.a = &a;
  c.rows = a.rows;
  c.d = a.d;
  c.dp = (a.d + 7) / 8 * 8;
  c.rp = (a.rows + 7) / 8 * 8;
  const int64_t rp16 = (a.rows + 15) / 16 * 16, dp16 = (a.d + 15) / 16 * 16;
  float* w = a.work;
  c.qbuf = w; w += rp16 * dp16;
  c.o = w; w += rp16 * dp16;
  c.s = w; w += B * rp16 * 2;
  c.kc = w; w += B * dp16;
  c.vc = w; w += B * dp16;
  c.m = w; w += rp16;
  c.l = w; w += rp16;
  c.alpha = w; w += rp16;
  c.limf = w;
  float lmin = INFINITY;
  for (int64_t r = 0; r < c.rp; ++r) {
    c.m[r] = -INFINITY;
    c.l[r] = 0.f;
    c.limf[r] = r < a.rows ? float(a.limit[r]) : 0.f;
    if (r < a.rows) lmin = std::min(lmin, c.limf[r]);
  }
  c.min_limit = lmin;
  std::fill(c.o, c.o + c.rows * c.dp, 0.f);
  const bool tile = a.rows >= kTileRows;
  switch (a.type) {
    case KvType::f32: tile ? run_tile<KvType::f32>(c) : run_rows<KvType::f32>(c); break;
    case KvType::f16: tile ? run_tile<KvType::f16>(c) : run_rows<KvType::f16>(c); break;
    case KvType::i8: tile ? run_tile<KvType::i8>(c) : run_rows<KvType::i8>(c); break;
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    std::copy(c.o + r * c.dp, c.o + r * c.dp + a.d, a.o + r * a.d);
    a.m[r] = c.m[r];
    a.l[r] = c.l[r];
  }
}

}  // namespace sparq
