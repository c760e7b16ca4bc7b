// attention_avx512.cpp - the attention task with 16-lane AVX-512 vectors.
// Fewer than 12 query rows (decode: the query heads sharing one key/value
// head) take the row path below when d is a multiple of 16 (else the AVX2 row
// path): keys and values are read once, in place (f16 / int8 converted in
// registers), scores of up to 4 rows x 2 keys per 8 accumulators, the online
// softmax along each row, then P.V in 64- or 128-column strips; the same
// prefetches as the AVX2 row path (attn_row_prefetch). Hot in cache it runs 1.5-2x the AVX2 row
// path's key rate, so decode from DRAM waits on memory, not on arithmetic.
// 12+ rows (prefill) take the "tile" shape. Same algorithm as
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
#include "vec_math.h"

// GCC 12's avx512fintrin.h seeds max / min / cvtps / roundscale / slli with
// _mm512_undefined_*() and then warns about it once inlined: not our variables.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace sparq {
namespace {

constexpr int64_t B = kAttnBlock;
constexpr int64_t kTileRows = 12;  // as the AVX2 kernel: fewer rows use the row path

// The AVX-512 width for vec_math.h.
struct Avx512Ops {
  using F = __m512;
  using I = __m512i;
  static F set(float v) { return _mm512_set1_ps(v); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I cvt(F a) { return _mm512_cvtps_epi32(a); }
  static I iset(int v) { return _mm512_set1_epi32(v); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I shl23(I a) { return _mm512_slli_epi32(a, 23); }
  static F as_float(I a) { return _mm512_castsi512_ps(a); }
};

// e^x for x in [-87.3, 88.7] (clamped above), exactly 0 below -87.3 (masked scores).
inline __m512 exp512(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ);
  return _mm512_maskz_mov_ps(live, exp_clamped<Avx512Ops>(x));
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

// --- row path: few query rows, keys streamed once ------------------------------
template <KvType T>
inline __m512 ld16(const void* base, int64_t idx) {
  if constexpr (T == KvType::f32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + idx);
  } else if constexpr (T == KvType::f16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + idx)));
  } else {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(base) + idx))));
  }
}

// r[k] = sum of the 16 lanes of a[k], k = 0..7.
inline __m256 reduce8x16(const __m512* a) {
  __m256 h[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) h[i] = _mm256_add_ps(_mm512_extractf32x8_ps(a[i], 0), _mm512_extractf32x8_ps(a[i], 1));
  const __m256 t0 = _mm256_hadd_ps(h[0], h[1]), t1 = _mm256_hadd_ps(h[2], h[3]);
  const __m256 t2 = _mm256_hadd_ps(h[4], h[5]), t3 = _mm256_hadd_ps(h[6], h[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

struct RowCtx {
  const AttnTaskArgs* a;
  int64_t rows, d;
  float *q, *o, *s, *m, *l, *alpha;  // q, o [rows, d]; s [rows, B]
};

// Scores s[r .. r + NR, jj] of NR query rows x NK keys at a time (8
// accumulators over d); the first row group also prefetches key rows 8 ahead
// into L1 and, with next_k, the next tile's key / value rows into L2.
template <KvType T, int NR, int NK>
void qk_group16(const RowCtx& c, int64_t r, const void* k, const float* scale, int64_t nb, int64_t avail,
                const char* next_k, int64_t next_v, int64_t next_rows) {
  static_assert(NR * NK == 8, "8 accumulators");
  constexpr int64_t es = kKvBytes<T>;
  const int64_t d = c.d, rb = d * es;
  for (int64_t jj = 0; jj < nb; jj += NK) {
    if (r == 0) attn_row_prefetch(static_cast<const char*>(k), rb, jj, NK, avail, next_k, next_v, next_rows);
    __m512 acc[8];
    int64_t row[NK];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int kk = 0; kk < NK; ++kk) row[kk] = std::min<int64_t>(jj + kk, nb - 1) * d;
    for (int64_t i = 0; i < d; i += 16) {
      __m512 qv[NR];
#pragma GCC unroll 8
      for (int rr = 0; rr < NR; ++rr) qv[rr] = _mm512_loadu_ps(c.q + (r + rr) * d + i);
#pragma GCC unroll 8
      for (int kk = 0; kk < NK; ++kk) {
        const __m512 kv = ld16<T>(k, row[kk] + i);
#pragma GCC unroll 8
        for (int rr = 0; rr < NR; ++rr) acc[rr * NK + kk] = _mm512_fmadd_ps(kv, qv[rr], acc[rr * NK + kk]);
      }
    }
    alignas(32) float t[8];
    _mm256_store_ps(t, reduce8x16(acc));  // lane rr * NK + kk
#pragma GCC unroll 8
    for (int kk = 0; kk < NK; ++kk) {
      if (jj + kk >= nb) break;
      const float sc = scale ? scale[jj + kk] : 1.f;
#pragma GCC unroll 8
      for (int rr = 0; rr < NR; ++rr) c.s[(r + rr) * B + jj + kk] = t[rr * NK + kk] * sc;
    }
  }
}

// Online softmax along each row of s [rows, B]; the scores become
// probabilities (times pscale[jj], int8 values' scales, when given).
void softmax_rows16(const RowCtx& c, int64_t j0, int64_t nb, const float* pscale) {
  const AttnTaskArgs& a = *c.a;
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  const int64_t nb16 = (nb + 15) / 16 * 16;
  for (int64_t r = 0; r < c.rows; ++r) {
    float* s = c.s + r * B;
    if (a.mask)
      for (int64_t jj = 0; jj < nb; ++jj) s[jj] += a.mask[r][j0 + jj];
    const int64_t vis = std::clamp<int64_t>(a.limit[r] - j0, 0, nb);
    for (int64_t jj = vis; jj < nb16; ++jj) s[jj] = -INFINITY;
    __m512 mx = ninf;
    for (int64_t jj = 0; jj < nb16; jj += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + jj));
    alignas(64) float mv[16];
    _mm512_store_ps(mv, mx);
    float mt = mv[0];
    for (int i = 1; i < 16; ++i) mt = std::max(mt, mv[i]);
    const float mold = c.m[r], mnew = std::max(mold, mt);
    c.m[r] = mnew;
    const float msafe = mnew == -INFINITY ? 0.f : mnew;
    const __m512 ms = _mm512_set1_ps(msafe);
    alignas(64) float al[16];
    _mm512_store_ps(al, exp512(_mm512_set1_ps(mold - msafe)));
    c.alpha[r] = al[0];
    __m512 sum = _mm512_setzero_ps();
    for (int64_t jj = 0; jj < nb16; jj += 16) {
      const __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(s + jj), ms));
      sum = _mm512_add_ps(sum, p);
      if (pscale) {
        alignas(64) float sc[16];
        for (int i = 0; i < 16; ++i) sc[i] = jj + i < nb ? pscale[jj + i] : 0.f;
        _mm512_storeu_ps(s + jj, _mm512_mul_ps(p, _mm512_load_ps(sc)));
      } else {
        _mm512_storeu_ps(s + jj, p);
      }
    }
    c.l[r] = c.l[r] * al[0] + _mm512_reduce_add_ps(sum);
  }
}

// o[r, c0 .. c0 + 16 NV) = o * alpha[r] + sum_j p[r, j] v[j, c0 ..] for MR rows from r0
template <KvType T, int MR, int NV>
inline void pv_strip16(const RowCtx& c, int64_t r0, const void* v, int64_t nb, int64_t c0) {
  const int64_t d = c.d;
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m512 al = _mm512_set1_ps(c.alpha[r0 + i]);
#pragma GCC unroll 8
    for (int n = 0; n < NV; ++n) acc[i][n] = _mm512_mul_ps(_mm512_loadu_ps(c.o + (r0 + i) * d + c0 + 16 * n), al);
  }
  for (int64_t j = 0; j < nb; ++j) {
    __m512 vv[NV];
#pragma GCC unroll 8
    for (int n = 0; n < NV; ++n) vv[n] = ld16<T>(v, j * d + c0 + 16 * n);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 pp = _mm512_set1_ps(c.s[(r0 + i) * B + j]);
#pragma GCC unroll 8
      for (int n = 0; n < NV; ++n) acc[i][n] = _mm512_fmadd_ps(pp, vv[n], acc[i][n]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int n = 0; n < NV; ++n) _mm512_storeu_ps(c.o + (r0 + i) * d + c0 + 16 * n, acc[i][n]);
}

template <KvType T, int NV>
void pv_group16(int mr, const RowCtx& c, int64_t r0, const void* v, int64_t nb, int64_t c0) {
  switch (mr) {
    case 1: pv_strip16<T, 1, NV>(c, r0, v, nb, c0); break;
    case 2: pv_strip16<T, 2, NV>(c, r0, v, nb, c0); break;
    case 3: if constexpr (NV <= 4) pv_strip16<T, 3, NV>(c, r0, v, nb, c0); break;
    case 4: if constexpr (NV <= 4) pv_strip16<T, 4, NV>(c, r0, v, nb, c0); break;
    case 5: if constexpr (NV <= 4) pv_strip16<T, 5, NV>(c, r0, v, nb, c0); break;
  }
}

// P.V over all rows: 128-column strips of up to 2 rows, else 64-column strips
// of up to 5 rows (rows split as evenly as possible), then a 16-column tail.
template <KvType T>
void pv_rows16(const RowCtx& c, const void* v, int64_t nb) {
  const int64_t d = c.d;
  const bool wide = c.rows <= 2 && d >= 128;
  const int64_t step = wide ? 128 : 64, mrmax = wide ? 2 : 5;
  const int64_t groups = (c.rows + mrmax - 1) / mrmax;
  int64_t c0 = 0;
  for (; c0 + step <= d; c0 += step)
    for (int64_t g = 0, r0 = 0; g < groups; ++g) {
      const int mr = int(c.rows / groups + (g < c.rows % groups ? 1 : 0));
      if (wide) pv_group16<T, 8>(mr, c, r0, v, nb, c0);
      else pv_group16<T, 4>(mr, c, r0, v, nb, c0);
      r0 += mr;
    }
  for (; c0 < d; c0 += 16)
    for (int64_t g = 0, r0 = 0; g < groups; ++g) {
      const int mr = int(c.rows / groups + (g < c.rows % groups ? 1 : 0));
      pv_group16<T, 1>(mr, c, r0, v, nb, c0);
      r0 += mr;
    }
}

template <KvType T>
void run_rows16(const RowCtx& c) {
  const AttnTaskArgs& a = *c.a;
  constexpr int64_t es = kKvBytes<T>;
  const int64_t d = c.d;
  const char* kbase = static_cast<const char*>(a.k);
  const char* vbase = static_cast<const char*>(a.v);
  for (int64_t j0 = a.j0; j0 < a.j1; j0 += B) {
    const int64_t nb = std::min(B, a.j1 - j0), jn = j0 + B;
    const void* k = kbase + j0 * d * es;
    const float* ks = T == KvType::i8 ? a.k_scale + j0 : nullptr;
    const char* next_k = jn < a.j1 ? kbase + jn * d * es : nullptr;
    const int64_t next_rows = std::min(B, a.j1 - jn), avail = a.j1 - j0;
    int64_t r = 0;
    for (; r + 4 <= c.rows; r += 4) qk_group16<T, 4, 2>(c, r, k, ks, nb, avail, next_k, vbase - kbase, next_rows);
    for (; r + 2 <= c.rows; r += 2) qk_group16<T, 2, 4>(c, r, k, ks, nb, avail, next_k, vbase - kbase, next_rows);
    for (; r < c.rows; ++r) qk_group16<T, 1, 8>(c, r, k, ks, nb, avail, next_k, vbase - kbase, next_rows);
    softmax_rows16(c, j0, nb, T == KvType::i8 ? a.v_scale + j0 : nullptr);
    pv_rows16<T>(c, vbase + j0 * d * es, nb);
  }
}

void attn_rows_avx512(const AttnTaskArgs& a) {
  RowCtx c;
  c.a = &a;
  c.rows = a.rows;
  c.d = a.d;
  const int64_t rp = (a.rows + 15) / 16 * 16, dp = (a.d + 15) / 16 * 16;
  float* w = a.work;  // within attn_work_floats(rows, d)
  c.q = w; w += rp * dp;
  c.o = w; w += rp * dp;
  c.s = w; w += B * rp * 2;
  w += 2 * B * dp;
  c.m = w; w += rp;
  c.l = w; w += rp;
  c.alpha = w;
  for (int64_t r = 0; r < a.rows; ++r) {
    c.m[r] = -INFINITY;
    c.l[r] = 0.f;
    for (int64_t i = 0; i < a.d; ++i) c.q[r * a.d + i] = a.q[r][i] * a.scale;
  }
  std::fill(c.o, c.o + a.rows * a.d, 0.f);
  switch (a.type) {
    case KvType::f32: run_rows16<KvType::f32>(c); break;
    case KvType::f16: run_rows16<KvType::f16>(c); break;
    case KvType::i8: run_rows16<KvType::i8>(c); break;
  }
  std::memcpy(a.o, c.o, size_t(a.rows * a.d) * 4);
  std::memcpy(a.m, c.m, size_t(a.rows) * 4);
  std::memcpy(a.l, c.l, size_t(a.rows) * 4);
}

}  // namespace

void attn_avx512(const AttnTaskArgs& a) {
  if (a.rows < kTileRows) {
    if (a.d % 16 == 0) attn_rows_avx512(a);
    else attn_avx2(a);
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
