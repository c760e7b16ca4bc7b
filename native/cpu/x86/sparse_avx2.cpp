// sparse_avx2.cpp - sparse x dense with AVX2 + FMA.
// m <= 8 (decode): csr (and f32 N:M) gather 8 activations per step at the
// stored columns (vpgatherdd; csr with one row by scalar loads); bitmask
// expands packed values into their lanes - f32: 8 per mask byte by vpermps with
// a table; int8: 32 per mask word by vpshufb with the control computed in
// registers - and multiplies contiguous activations (int8: vpmaddubsw with the
// sign trick into int32): no gather, each weight byte read once. int8 N:M rows
// expand the same way, their mask words built from the indices (NmMasks), but
// 2:4, 4:8 and 8:16 (int8 or int4) pick their activations instead (spmv_pick:
// 32 multiplies per 64 columns). int4 rows are unpacked to int8 first, their sums scaled per
// group.
// m > 8: a row's nonzeros are decoded once, then each one adds value x
// xT[column, 0..m) into 32-wide accumulator strips (int8 with m >= 16 goes
// through the dense GEMM: sprow_avx2 expands its rows).
#include <cassert>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../sparse.h"
#include "../rows.h"
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

// first n (0..8) lanes set
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Gathered products for f32 values x f32 activations.
struct F32Dot {
  using Acc = __m256;
  const float* x;
  int64_t ld;
  static Acc zero() { return _mm256_setzero_ps(); }
  static Acc add(Acc a, Acc b) { return _mm256_add_ps(a, b); }
  static Acc vals(const SparseWeight& s, int64_t p) { return _mm256_loadu_ps(s.vf.data() + p); }
  static Acc keep(Acc v, __m256i mk) { return _mm256_and_ps(v, _mm256_castsi256_ps(mk)); }
  Acc step(Acc acc, Acc v, int i, __m256i c) const { return _mm256_fmadd_ps(v, _mm256_i32gather_ps(x + i * ld, c, 4), acc); }
  Acc step(Acc acc, Acc v, int i, __m256i c, __m256i mk) const {
    return _mm256_fmadd_ps(v, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x + i * ld, c, _mm256_castsi256_ps(mk), 4), acc);
  }
};

// Gathered products for int8 values x int8 activations, exact in int32: each
// lane gathers the 4 bytes at its column (the rows have >= 3 bytes of padding)
// and keeps the first, sign-extended.
struct I8Dot {
  using Acc = __m256i;
  const int8_t* x;
  int64_t ld;
  static Acc zero() { return _mm256_setzero_si256(); }
  static Acc add(Acc a, Acc b) { return _mm256_add_epi32(a, b); }
  static Acc vals(const SparseWeight& s, int64_t p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s.vq.data() + p)));
  }
  static Acc keep(Acc v, __m256i mk) { return _mm256_and_si256(v, mk); }
  static Acc sext(__m256i g) { return _mm256_srai_epi32(_mm256_slli_epi32(g, 24), 24); }
  Acc step(Acc acc, Acc v, int i, __m256i c) const {
    return _mm256_add_epi32(acc, _mm256_mullo_epi32(v, sext(_mm256_i32gather_epi32(reinterpret_cast<const int*>(x + i * ld), c, 1))));
  }
  Acc step(Acc acc, Acc v, int i, __m256i c, __m256i mk) const {
    const __m256i g = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), reinterpret_cast<const int*>(x + i * ld), c, mk, 1);
    return _mm256_add_epi32(acc, _mm256_mullo_epi32(v, sext(g)));
  }
};

// acc[i] += vals . x_i[cols] for stored values [p, p + cnt). Columns: csr reads
// them (int32, or uint16 widened: C is the column type); N:M (N and M powers of
// two) derives them in registers from the in-group index: column = (q / N) * M + idx[q].
template <int MR, bool NM, class D, class C = int32_t>
inline void gather_dot(const SparseWeight& s, const D& d, int64_t p, const C* cols, int64_t cnt, typename D::Acc* acc) {
  using Acc = typename D::Acc;
  const int ln = NM ? __builtin_ctz(unsigned(s.N)) : 0, lm = NM ? __builtin_ctz(unsigned(s.M)) : 0;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), kmax = _mm256_set1_epi32(int(s.k - 1));
  const int bits = NM ? s.idx_bits() : 0;
  const uint8_t* ib = NM ? s.idx.data() + (p / (s.groups() * s.N)) * s.idx_row_bytes() : nullptr;  // row p / per
  const __m256i shift = _mm256_mullo_epi32(lane, _mm256_set1_epi32(bits)), imask = _mm256_set1_epi32((1 << bits) - 1);
  auto columns = [&](int64_t q) {
    if constexpr (NM) {
      const __m256i qi = _mm256_add_epi32(_mm256_set1_epi32(int(q)), lane);
      // 8 packed indices (q is a multiple of 8): at most 32 bits, shifted into their lanes
      uint32_t word;
      std::memcpy(&word, ib + q * bits / 8, 4);
      const __m256i id = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(word)), shift), imask);
      // padding past k (a partial last group) reads column k - 1 with a zero value
      return _mm256_min_epi32(_mm256_add_epi32(_mm256_slli_epi32(_mm256_srli_epi32(qi, ln), lm), id), kmax);
    } else if constexpr (sizeof(C) == 2) {
      return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cols + q)));  // 8 entries of padding
    } else {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cols + q));
    }
  };
  Acc acc2[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc2[i] = D::zero();
  int64_t q = 0;
  // two steps in flight: gathers have long latency
  for (; q + 16 <= cnt; q += 16) {
    const __m256i c0 = columns(q), c1 = columns(q + 8);
    const Acc v0 = D::vals(s, p + q), v1 = D::vals(s, p + q + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      acc[i] = d.step(acc[i], v0, i, c0);
      acc2[i] = d.step(acc2[i], v1, i, c1);
    }
  }
  for (; q < cnt; q += 8) {
    const __m256i mk = lanes(std::min<int64_t>(8, cnt - q));
    __m256i ci;
    if constexpr (NM || sizeof(C) == 2) ci = _mm256_and_si256(columns(q), mk);
    else ci = _mm256_maskload_epi32(cols + q, mk);
    const Acc v = D::keep(D::vals(s, p + q), mk);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = d.step(acc[i], v, i, ci, mk);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i] = D::add(acc[i], acc2[i]);
}

// csr / N:M rows through gather_dot (f32 or int8)
template <int MR, class D>
inline void gather_row(const SparseWeight& s, const D& d, int64_t j, typename D::Acc* acc) {
  if (s.format == SparseFormat::csr) {
    const int64_t p0 = s.row_ptr[size_t(j)];
    if (s.narrow) gather_dot<MR, false>(s, d, p0, s.col16.data() + p0, s.row_ptr[size_t(j + 1)] - p0, acc);
    else gather_dot<MR, false>(s, d, p0, s.col.data() + p0, s.row_ptr[size_t(j + 1)] - p0, acc);
  } else {
    const int64_t per = s.groups() * s.N;
    gather_dot<MR, true>(s, d, j * per, static_cast<const int32_t*>(nullptr), per, acc);
  }
}

template <int MR>
void spmv_f32(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t k = s.k;
  const float* x = a.x;
  const ExpandTable& T = table();
  for (int64_t j = j0; j < j1; ++j) {
    __m256 acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
    if (MR == 1 && s.format == SparseFormat::csr) {
      // one activation row: scalar loads beat vgatherdps here (three loads and an
      // fma per nonzero, eight independent sums)
      const int64_t p0 = s.row_ptr[size_t(j)], p1 = s.row_ptr[size_t(j + 1)];
      const float* val = s.vf.data();
      auto run = [&](const auto* col) {
        float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t p = p0;
        for (; p + 8 <= p1; p += 8)
#pragma GCC unroll 8
          for (int u = 0; u < 8; ++u) t[u] = std::fma(val[p + u], x[col[p + u]], t[u]);
        for (; p < p1; ++p) t[0] = std::fma(val[p], x[col[p]], t[0]);
        acc[0] = _mm256_loadu_ps(t);
      };
      if (s.narrow) run(s.col16.data());
      else run(s.col.data());
    } else if (s.format != SparseFormat::bitmask) {
      gather_row<MR>(s, F32Dot{x, k}, j, acc);
    } else {
      int64_t p = s.row_ptr[size_t(j)];
      const uint32_t* mw = s.mask.data() + j * s.words();
      // every mask byte is processed (a zero byte gives zeros): branching on zero bytes
      // mispredicts at high sparsity, where a third or more of them are zero
      for (int64_t w = 0; w < s.words(); ++w) {
        const uint32_t bits = mw[w];
        for (int b8 = 0; b8 < 4 && w * 32 + b8 * 8 < k; ++b8) {
          const uint32_t b = bits >> (8 * b8) & 0xff;
          const int64_t c0 = w * 32 + b8 * 8;
          const __m256 v = _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(s.vf.data() + p), _mm256_load_si256(reinterpret_cast<const __m256i*>(T.perm[b]))),
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
    }
    const float b = a.bias ? a.bias[j] : 0.f;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.y[i * s.n + j] = hsum(acc[i]) + b;
  }
}

inline int32_t hsum_epi32(__m256i v) {
  __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
  return _mm_cvtsi128_si32(x);
}

// The 32 weights of mask word `b`, expanded from the packed values at vp (int8).
// The shuffle control is computed in registers: each byte lane tests its mask
// bit, an in-lane prefix sum of the set lanes gives each one its value number,
// and the upper 16 lanes read from vp + popcount(low 16 bits).
inline __m256i expand32(const int8_t* vp, uint32_t b) {
  const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  // on: 0xff where the weight is stored (-1 per set lane)
  const __m256i on = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int(b)), sel), bit), bit);
  // s: minus the inclusive count of set lanes, within each 16-lane half
  __m256i sum = _mm256_add_epi8(on, _mm256_slli_si256(on, 1));
  sum = _mm256_add_epi8(sum, _mm256_slli_si256(sum, 2));
  sum = _mm256_add_epi8(sum, _mm256_slli_si256(sum, 4));
  sum = _mm256_add_epi8(sum, _mm256_slli_si256(sum, 8));
  // set lanes: ~s = count before them (0..15); other lanes 0xff (vpshufb writes zero)
  const __m256i ctrl = _mm256_andnot_si256(_mm256_and_si256(sum, on), _mm256_set1_epi8(-1));
  const int c01 = __builtin_popcount(b & 0xffff);
  const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vp))),
                                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(vp + c01)), 1);
  return _mm256_shuffle_epi8(v, ctrl);
}

// N:M index bytes -> the bitmask words of the same positions (the indices of a
// group are distinct: sparse_from_parts checks it), so N:M rows expand as bitmask
// rows do. For each (N, M) a table takes an index byte to the positions its
// indices mark, relative to the group of its first index; a 32-weight word reads
// 32 / M x N x bits / 8 whole index bytes (1 to 8).
struct NmMaskTables {
  uint32_t t[4][4][256];  // [log2 M - 1][log2 N][index byte]
  NmMaskTables() {
    for (int lm = 1; lm <= 4; ++lm)
      for (int ln = 0; ln < lm; ++ln) {
        const int M = 1 << lm, N = 1 << ln, b = SparseWeight::idx_bits(M), per_byte = 8 / b;
        for (int v = 0; v < 256; ++v) {
          uint32_t m = 0;
          for (int u = 0; u < per_byte; ++u) m |= 1u << ((per_byte >= N ? (u / N) * M : 0) + (v >> (u * b) & ((1 << b) - 1)));
          t[lm - 1][ln][v] = m;
        }
      }
  }
};

class NmMasks {
 public:
  NmMasks(const SparseWeight& s, int64_t j) {
    static const NmMaskTables tables;
    const int lm = __builtin_ctz(unsigned(s.M)), ln = __builtin_ctz(unsigned(s.N)), b = s.idx_bits(), per_byte = 8 / b;
    t_ = tables.t[lm - 1][ln];
    ib_ = s.idx.data() + j * s.idx_row_bytes();
    bytes_ = 32 / s.M * s.N * b / 8;
    nm24_ = s.N == 2 && s.M == 4;
    for (int i = 0; i < bytes_; ++i) shift_[i] = (i * per_byte / s.N) * s.M;
    // the last word covers only the row's groups (its index bytes may run into the
    // next row's, or the zero padding after the last row)
    last_ = s.words() - 1;
    const int64_t cover = s.groups() * s.M - last_ * 32;
    last_mask_ = cover >= 32 ? ~0u : (1u << cover) - 1;
  }
  uint32_t word(int64_t w) const {
    const uint8_t* p = ib_ + w * bytes_;
    uint32_t m;
    if (nm24_) {
      m = t_[p[0]] | t_[p[1]] << 8 | t_[p[2]] << 16 | t_[p[3]] << 24;
    } else {
      m = 0;
      for (int i = 0; i < bytes_; ++i) m |= t_[p[i]] << shift_[i];
    }
    return w == last_ ? m & last_mask_ : m;
  }

 private:
  const uint32_t* t_;
  const uint8_t* ib_;
  int bytes_;
  bool nm24_;
  int shift_[8];
  int64_t last_;
  uint32_t last_mask_;
};

// Row j's 32-bit position masks (bitmask: stored; N:M: built from the indices), for expand32.
template <class F>
inline void with_masks(const SparseWeight& s, int64_t j, F fn) {
  if (s.format == SparseFormat::bitmask) {
    const uint32_t* mw = s.mask.data() + j * s.words();
    fn([mw](int64_t w) { return mw[w]; });
  } else {
    const NmMasks nm(s, j);
    fn([&nm](int64_t w) { return nm.word(w); });
  }
}

// Row j's int4 values as int8, into buf (thread-local, reused): the result points
// at the row's first value, with >= 48 readable bytes after its last (expand32
// reads 16 bytes at up to 32 values on).
inline const int8_t* unpack4_row(const SparseWeight& s, int64_t j, std::vector<int8_t>& buf) {
  const int64_t p0 = s.row_begin(j), p1 = s.row_begin(j + 1);
  const int64_t b0 = p0 / 2, bytes = (p1 + 1) / 2 - b0;  // v4 has kSparseI8Pad bytes after its last: 16-byte loads stay inside
  const size_t need = size_t((bytes + 15) / 16 * 32 + 64);
  if (buf.size() < need) buf.resize(need);
  const __m128i lo4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
  const uint8_t* src = s.v4.data() + b0;
  int8_t* dst = buf.data();
  for (int64_t b = 0; b < bytes; b += 16, src += 16, dst += 32) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    const __m128i lo = _mm_and_si128(v, lo4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), eight));
  }
  return buf.data() + p0 % 2;
}

// Row j's int8 values (int8: stored; int4: unpacked into buf) and the source of its masks.
template <class F>
inline void with_mask_words(const SparseWeight& s, int64_t j, std::vector<int8_t>& buf, F fn) {
  const int8_t* vp = s.int4 ? unpack4_row(s, j, buf) : s.vq.data() + s.row_begin(j);
  with_masks(s, j, [&](auto mask) { fn(vp, mask); });
}

// acc[i] += the dot of words [w0, w1) of an int8-valued row (its values from vp
// on, expanded under mask(w)) with activation row i; returns vp past those values.
// |w| (u8) x sign(x, w) (s8): pairs stay within int16 (|x|, |w| <= 127).
template <int MR, class Mask>
inline const int8_t* dot_words(const SpArgs& a, const int8_t* vp, const Mask& mask, int64_t w0, int64_t w1, __m256i* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  auto dot = [&](__m256i v, int64_t w) {
    const __m256i av = _mm256_abs_epi8(v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq + i * a.ldq + w * 32));
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(av, _mm256_sign_epi8(xv, v)), ones));
    }
  };
  int64_t w = w0;
  for (; w + 2 <= w1; w += 2) {  // two words per step: independent expansions
    const uint32_t b0 = mask(w), b1 = mask(w + 1);
    const int8_t* vp1 = vp + __builtin_popcount(b0);
    const __m256i v0 = expand32(vp, b0), v1 = expand32(vp1, b1);
    vp = vp1 + __builtin_popcount(b1);
    dot(v0, w);
    dot(v1, w + 1);
  }
  if (w < w1) {
    const uint32_t b = mask(w);
    dot(expand32(vp, b), w);
    vp += __builtin_popcount(b);
  }
  return vp;
}

template <int MR>
void spmv_i8(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t words = s.words();
  for (int64_t j = j0; j < j1; ++j) {
    __m256i acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_si256();
    if (s.format == SparseFormat::csr) gather_row<MR>(s, I8Dot{a.xq, a.ldq}, j, acc);
    else with_masks(s, j, [&](auto mask) { dot_words<MR>(a, s.vq.data() + s.row_begin(j), mask, 0, words, acc); });
    const float ws = s.scale[size_t(j)];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.y[i * s.n + j] = sparse_q_out(hsum_epi32(acc[i]), a.xs[i], ws, a.bias, j);
  }
}

// int4 (bitmask or N:M): the row unpacked to int8, expanded and multiplied as
// int8 rows are, with int32 sums per scale group added into f32.
template <int MR>
void spmv_i4(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t words = s.words(), G = s.qgroups(), gw = s.group / 32;
  thread_local std::vector<int8_t> buf;
  for (int64_t j = j0; j < j1; ++j) {
    __m256 accf[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) accf[i] = _mm256_setzero_ps();
    const uint16_t* sc = s.scale4.data() + j * G;
    with_mask_words(s, j, buf, [&](const int8_t* vp, auto mask) {
      for (int64_t g = 0; g < G; ++g) {
        __m256i acc[MR];
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_si256();
        vp = dot_words<MR>(a, vp, mask, g * gw, std::min(words, (g + 1) * gw), acc);
        const __m256 scale = _mm256_set1_ps(_cvtsh_ss(sc[g]));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), scale, accf[i]);
      }
    });
    const float b = a.bias ? a.bias[j] : 0.f;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.y[i * s.n + j] = hsum(accf[i]) * a.xs[i] + b;
  }
}

// N:M decode with N / M = 1/2 (2:4, 4:8, 8:16; int8 and int4 values) by picked
// activations: in place of expanding 32 stored values to 64 positions, each
// block of 64 columns picks its 32 activations with vpshufb and multiplies them
// by the 32 values as stored - half the multiplies, no prefix sums. The picks
// come in the order [v0-7, v16-23 | v8-15, v24-31] (x's columns 0-31 fill the
// low half of each 128-bit lane, columns 32-63 the high half; each 8-value run
// is 16 columns, one lane of one half), and the values are put in the same
// order (int8: vpermq; int4: the nibble shuffle below).

// 32 nibbles (16 bytes, nibble p in byte p / 2, low first) as bytes in the picks'
// order: each 16-bit lane holds one source byte twice (vpshufb), its low byte
// keeps the low nibble and its high byte the high one.
inline __m256i nibbles_in_pick_order(const uint8_t* p) {
  const __m256i dup = _mm256_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 8, 8, 9, 9, 10, 10, 11, 11, 4, 4, 5, 5, 6, 6, 7, 7, 12, 12, 13, 13, 14, 14, 15, 15);
  const __m256i w = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), dup);
  return _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi16(0x000f)), _mm256_and_si256(_mm256_srli_epi16(w, 4), _mm256_set1_epi16(0x0f00)));
}

// The vpshufb control of a block (32 bytes: the column of each picked value
// within its 16-column lane) from the row's indices.
template <int M>
struct PickCtrl {
  __m256i spread, bit1, bit2, base;
  PickCtrl() {
    alignas(32) int8_t sp[32], b1[32], b2[32], bs[32];
    for (int p = 0; p < 32; ++p) {
      const int q = p % 16, v = (q < 8 ? 0 : 16) + p / 16 * 8 + q % 8;  // the value in byte p
      const int N = M / 2;
      sp[p] = int8_t(v / 4);                   // 2:4: its index byte (4 two-bit indices)
      b1[p] = int8_t(1 << (2 * (v % 4)));      // 2:4: its index's bits
      b2[p] = int8_t(2 << (2 * (v % 4)));
      bs[p] = int8_t(M * ((v / N) % (16 / M)));  // its group's first column within the 16-column lane
    }
    spread = _mm256_load_si256(reinterpret_cast<const __m256i*>(sp));
    bit1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b1));
    bit2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b2));
    base = _mm256_load_si256(reinterpret_cast<const __m256i*>(bs));
  }
  // block b of the row's index bytes ib: 2:4 holds 2-bit indices (8 bytes a block),
  // 4:8 and 8:16 4-bit ones (16 bytes a block)
  __m256i operator()(const uint8_t* ib, int64_t b) const {
    if constexpr (M == 4) {
      int64_t u;
      std::memcpy(&u, ib + b * 8, 8);
      const __m256i t = _mm256_shuffle_epi8(_mm256_set1_epi64x(u), spread);
      // each byte tests its index's two bits: base + 1 + 2 where set (a set test is -1)
      const __m256i e1 = _mm256_cmpeq_epi8(_mm256_and_si256(t, bit1), bit1), e2 = _mm256_cmpeq_epi8(_mm256_and_si256(t, bit2), bit2);
      return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_sub_epi8(base, e1), e2), e2);
    } else {
      return _mm256_add_epi8(nibbles_in_pick_order(ib + b * 16), base);
    }
  }
};

// 32 int4 values (16 bytes) in the picks' order, as int8 in [-8, 7].
inline __m256i values4_in_pick_order(const uint8_t* p) { return _mm256_sub_epi8(nibbles_in_pick_order(p), _mm256_set1_epi8(8)); }

template <int MR, bool Int4, int M>
void spmv_pick(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  static const PickCtrl<M> ctrl_of;
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t blocks = (s.k + 63) / 64, per = s.groups() * s.N, rb = s.idx_row_bytes(), G = Int4 ? s.qgroups() : 0;
  // int4: the row's scales in f32 (+ a zero: a last block of at most 32 columns reads one past them)
  thread_local std::vector<float> sf;
  if (Int4 && int64_t(sf.size()) < G + 8) sf.resize(size_t(G + 8));
  const int sh = Int4 ? __builtin_ctzll(uint64_t(s.group)) - 6 : 0;  // group 32: -1 (two scales a block)
  for (int64_t j = j0; j < j1; ++j) {
    const uint8_t* ib = s.idx.data() + j * rb;  // kSparseIdxPad bytes after the last row: 8- or 16-byte reads stay inside
    if constexpr (Int4) {
      const uint16_t* sc = s.scale4.data() + j * G;
      int64_t g = 0;
      for (; g + 8 <= G; g += 8) _mm256_storeu_ps(sf.data() + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g))));
      for (; g < G; ++g) sf[size_t(g)] = _cvtsh_ss(sc[g]);
      sf[size_t(G)] = 0.f;
    }
    __m256i acc[MR];
    __m256 accf[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_si256(), accf[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const __m256i ctrl = ctrl_of(ib, b);
      // past k: the last block's values and indices run into the next row (or the padding), and its
      // picks into x's zero columns (ldq covers whole blocks)
      __m256i v;
      if constexpr (Int4) v = values4_in_pick_order(s.v4.data() + (j * per + b * 32) / 2);
      else v = _mm256_permute4x64_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.vq.data() + j * per + b * 32)), 0xd8);
      const __m256i av = _mm256_abs_epi8(v);
      __m256 scale;
      if constexpr (Int4) {
        if (sh < 0) {  // [a, a, b, b] in each lane: columns 0-31 and 32-63 have their own scales
          __m128 p = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(sf.data() + 2 * b)));
          p = _mm_unpacklo_ps(p, p);
          scale = _mm256_insertf128_ps(_mm256_castps128_ps256(p), p, 1);
        } else {
          scale = _mm256_broadcast_ss(sf.data() + (b >> sh));
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const int8_t* xr = a.xq + i * a.ldq + b * 64;
        const __m256i x0 = _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr)), ctrl);
        const __m256i x1 = _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + 32)), ctrl);
        const __m256i xs = _mm256_blend_epi32(x0, x1, 0xcc);
        const __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(av, _mm256_sign_epi8(xs, v)), ones);
        if constexpr (Int4) accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, accf[i]);
        else acc[i] = _mm256_add_epi32(acc[i], d);
      }
    }
    if constexpr (Int4) {
      const float bias = a.bias ? a.bias[j] : 0.f;
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) a.y[i * s.n + j] = hsum(accf[i]) * a.xs[i] + bias;
    } else {
      const float ws = s.scale[size_t(j)];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) a.y[i * s.n + j] = sparse_q_out(hsum_epi32(acc[i]), a.xs[i], ws, a.bias, j);
    }
  }
}

template <int MR>
void spmv_rows(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const bool pick = s.format == SparseFormat::nm && 2 * s.N == s.M && s.M >= 4;  // 2:4, 4:8, 8:16
  if (pick) {  // the block's control, its values and the group of its scales depend on M
    constexpr bool kI4 = true, kI8 = false;
    if (s.int4) return s.M == 4 ? spmv_pick<MR, kI4, 4>(s, a, j0, j1) : s.M == 8 ? spmv_pick<MR, kI4, 8>(s, a, j0, j1) : spmv_pick<MR, kI4, 16>(s, a, j0, j1);
    if (s.int8) return s.M == 4 ? spmv_pick<MR, kI8, 4>(s, a, j0, j1) : s.M == 8 ? spmv_pick<MR, kI8, 8>(s, a, j0, j1) : spmv_pick<MR, kI8, 16>(s, a, j0, j1);
  }
  if (s.int4) spmv_i4<MR>(s, a, j0, j1);
  else if (s.int8) spmv_i8<MR>(s, a, j0, j1);
  else spmv_f32<MR>(s, a, j0, j1);
}

// Row j's nonzeros (columns < k) in order, values as stored (int8 unscaled).
template <class V>
void decode_row(const SparseWeight& s, int64_t j, std::vector<int64_t>& cols, std::vector<V>& vals) {
  cols.clear();
  vals.clear();
  auto val = [&](int64_t p) { return s.int8 ? V(s.vq[size_t(p)]) : V(s.vf[size_t(p)]); };
  switch (s.format) {
    case SparseFormat::csr:
      for (int64_t p = s.row_ptr[size_t(j)]; p < s.row_ptr[size_t(j + 1)]; ++p) {
        cols.push_back(s.column(p));
        vals.push_back(val(p));
      }
      break;
    case SparseFormat::bitmask: {
      int64_t p = s.row_ptr[size_t(j)];
      const uint32_t* mw = s.mask.data() + j * s.words();
      for (int64_t w = 0; w < s.words(); ++w)
        for (uint32_t bits = mw[w]; bits; bits &= bits - 1, ++p) {
          cols.push_back(w * 32 + __builtin_ctz(bits));
          vals.push_back(val(p));
        }
      break;
    }
    case SparseFormat::nm: {
      const int64_t per = s.groups() * s.N, p0 = j * per;
      for (int64_t q = 0; q < per; ++q) {
        const int64_t c = (q / s.N) * s.M + s.nm_index(j, q);
        const V v = val(p0 + q);
        if (c < s.k && v != V(0)) {
          cols.push_back(c);
          vals.push_back(v);
        }
      }
      break;
    }
  }
}

void spmmt_f32(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t m = a.m;
  std::vector<int64_t> cols;
  std::vector<float> vals;
  cols.reserve(size_t(s.k));
  vals.reserve(size_t(s.k));
  for (int64_t j = j0; j < j1; ++j) {
    decode_row(s, j, cols, vals);
    const __m256 vb = _mm256_set1_ps(a.bias ? a.bias[j] : 0.f);
    float* out = a.y + j * m;
    const size_t nz = cols.size();
    int64_t i0 = 0;
    for (; i0 + 32 <= m; i0 += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t q = 0; q < nz; ++q) {
        const __m256 v = _mm256_set1_ps(vals[q]);
        const float* xr = a.x + cols[q] * m + i0;
        a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr), a0);
        a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8), a1);
        a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 16), a2);
        a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 24), a3);
      }
      _mm256_storeu_ps(out + i0, _mm256_add_ps(a0, vb));
      _mm256_storeu_ps(out + i0 + 8, _mm256_add_ps(a1, vb));
      _mm256_storeu_ps(out + i0 + 16, _mm256_add_ps(a2, vb));
      _mm256_storeu_ps(out + i0 + 24, _mm256_add_ps(a3, vb));
    }
    for (; i0 < m; i0 += 8) {
      const __m256i mk = lanes(m - i0);
      __m256 acc = _mm256_setzero_ps();
      for (size_t q = 0; q < nz; ++q) acc = _mm256_fmadd_ps(_mm256_set1_ps(vals[q]), _mm256_maskload_ps(a.x + cols[q] * m + i0, mk), acc);
      _mm256_maskstore_ps(out + i0, mk, _mm256_add_ps(acc, vb));
    }
  }
}

// int8: exact int32 strips, then the shared epilogue acc * (xs[i] * ws) + bias.
void spmmt_i8(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  const int64_t m = a.m;
  std::vector<int64_t> cols;
  std::vector<int32_t> vals;
  cols.reserve(size_t(s.k));
  vals.reserve(size_t(s.k));
  alignas(32) int32_t acc[32];
  for (int64_t j = j0; j < j1; ++j) {
    decode_row(s, j, cols, vals);
    const float ws = s.scale[size_t(j)];
    float* out = a.y + j * m;
    const size_t nz = cols.size();
    for (int64_t i0 = 0; i0 < m; i0 += 32) {
      const int64_t w = std::min<int64_t>(32, m - i0);
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      if (w == 32) {
        for (size_t q = 0; q < nz; ++q) {
          const __m256i v = _mm256_set1_epi32(vals[q]);
          const __m256i* xr = reinterpret_cast<const __m256i*>(a.xqt + cols[q] * m + i0);
          a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(v, _mm256_loadu_si256(xr)));
          a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(v, _mm256_loadu_si256(xr + 1)));
          a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(v, _mm256_loadu_si256(xr + 2)));
          a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(v, _mm256_loadu_si256(xr + 3)));
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(acc), a0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 8), a1);
        _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 16), a2);
        _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 24), a3);
      } else {
        for (int64_t t = 0; t < w; ++t) acc[t] = 0;
        for (size_t q = 0; q < nz; ++q) {
          const int32_t v = vals[q];
          const int32_t* xr = a.xqt + cols[q] * m + i0;
          for (int64_t t = 0; t < w; ++t) acc[t] += v * xr[t];
        }
      }
      for (int64_t t = 0; t < w; ++t) out[i0 + t] = sparse_q_out(acc[t], a.xs[i0 + t], ws, a.bias, j);
    }
  }
}

}  // namespace

void spmv_avx2(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  assert(1 <= a.m && a.m <= 8 && 0 <= j0 && j0 <= j1 && j1 <= s.n);
  assert(!s.quantized() || (a.ldq >= s.words() * 32 && a.ldq >= s.k + 4));
  dispatch_rows<8>(a.m, [&](auto M) { spmv_rows<decltype(M)::value>(s, a, j0, j1); });  // m in [1, 8] (asserted above)
}

void sprow_avx2(const SparseWeight& s, int64_t j, int8_t* out) {
  if (s.format == SparseFormat::csr) return sparse_row_i8(s, j, out);
  thread_local std::vector<int8_t> buf;  // int4 values unpacked
  with_mask_words(s, j, buf, [&](const int8_t* vp, auto mask) {
    for (int64_t w = 0, words = s.words(); w < words; ++w) {
      const uint32_t b = mask(w);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + w * 32), expand32(vp, b));
      vp += __builtin_popcount(b);
    }
  });
}

void spmmt_avx2(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1) {
  if (s.int8) spmmt_i8(s, a, j0, j1);
  else spmmt_f32(s, a, j0, j1);
}

}  // namespace sparq
