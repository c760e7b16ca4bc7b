// sparse.h - sparse weight formats and the sparse x dense product.
//
// A weight W [n, k] (nn.Linear layout) keeps only its nonzeros, in one of:
//  - csr:     row_ptr [n + 1], columns [nnz] (uint16 when k <= 65536, else int32), values [nnz]
//  - bitmask: one bit per weight (rows of ceil(k / 32) words), values of the set
//             bits in order, row_ptr [n + 1] into the values
//  - nm:      exactly N values per group of M along k (2:4, 4:8; k padded to M)
//             with their in-group index packed in idx_bits() bits (2 for 2:4, 4 for
//             4:8): values [n, k / M * N], idx rows of idx_row_bytes(); within a
//             group the indices ascend (every builder sorts them: the AVX-512 2:4
//             kernel expands a group's values into its lanes in order)
// Values are f32, int8 with one f32 scale per row, or int4 (bitmask and nm
// only) with one f16 scale per row and group of `group` columns along k (32,
// 64 or 128: a 2:4 weight with group 64 has 32 values per scale). int4 values
// are in [-7, 7], stored two per byte as v + 8 (value p in byte p / 2, the low
// nibble when p is even; a row may start in a high nibble); 0 never appears.
// Quantized weights follow the dense int8 / int4 linears' contract: each
// activation row is quantized on the fly (symmetric, max|x| / 127, round to
// nearest even, as QuantRowsArgs), products accumulate exactly in int32 (int4:
// per group), and y[i, j] = acc * (xs[i] * ws[j]) + bias[j] (int8), or
// xs[i] * sum_g acc_g * ws[j, g] + bias[j] (int4).
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparq/sparq.h"

namespace sparq {

enum class SparseFormat : int { csr = 0, bitmask = 1, nm = 2 };
constexpr SparseFormat kSparseFormats[] = {SparseFormat::csr, SparseFormat::bitmask, SparseFormat::nm};
// The formats' names ("csr", "bitmask", "nm"): the one place they are spelled, for
// saved models and the JS API.
const char* sparse_format_name(SparseFormat f);
// false when name is none of them
bool parse_sparse_format(const std::string& name, SparseFormat* out);

// Zero bytes after the last int8 value: the AVX-512 bitmask kernel loads 64
// bytes from where a row's next values start.
constexpr int64_t kSparseI8Pad = 64;
// Zero bytes after the last N:M index row: the AVX-512 2:4 kernel loads 64 index
// bytes (512 weights) at a time.
constexpr int64_t kSparseIdxPad = 64;
struct SparseWeight {
  SparseFormat format = SparseFormat::csr;
  int64_t n = 0, k = 0, nnz = 0;  // nnz: stored values (nm: n * groups * N, zeros included)
  bool int8 = false;
  bool int4 = false;               // bitmask, nm
  int64_t group = 0;               // int4: columns per scale
  int N = 0, M = 0;                // nm only
  std::vector<int64_t> row_ptr;    // csr, bitmask
  WeightVector<int32_t> col;        // csr, k > 65536
  WeightVector<uint16_t> col16;     // csr, k <= 65536 (+ 8 entries of padding)
  bool narrow = false;             // csr columns are in col16
  WeightVector<uint32_t> mask;      // bitmask: n * words
  WeightVector<uint8_t> idx;        // nm: packed in-group indices, n rows of idx_row_bytes() (+ kSparseIdxPad zero bytes)
  WeightVector<float> vf;           // f32 values
  WeightVector<int8_t> vq;          // int8 values (+ kSparseI8Pad zero bytes)
  std::vector<float> scale;        // int8: per row
  WeightVector<uint8_t> v4;         // int4 values, two per byte (+ kSparseI8Pad zero bytes)
  std::vector<uint16_t> scale4;    // int4: f16 scales [n, qgroups()]
  int64_t words() const { return (k + 31) / 32; }
  // int4: scale groups per row
  int64_t qgroups() const { return group ? (k + group - 1) / group : 0; }
  // activations are quantized (int8 or int4 values)
  bool quantized() const { return int8 || int4; }
  // int4: value p (-7 .. 7)
  int value4(int64_t p) const { return int(v4[size_t(p / 2)] >> (p % 2 * 4) & 15) - 8; }
  // first stored value of row j (csr, bitmask: row_ptr; nm: fixed count per row)
  int64_t row_begin(int64_t j) const { return format == SparseFormat::nm ? j * groups() * N : row_ptr[size_t(j)]; }
  int64_t groups() const { return M ? (k + M - 1) / M : 0; }
  size_t bytes() const;
  int64_t column(int64_t p) const { return narrow ? int64_t(col16[size_t(p)]) : int64_t(col[size_t(p)]); }
  // nm: bits per in-group index (1 for M = 2, 2 for M = 4, 4 for M = 8 or 16), bytes per row,
  // and the index of value q of row j
  static int idx_bits(int M) { return M <= 2 ? 1 : M <= 4 ? 2 : 4; }
  static int64_t idx_row_bytes(int64_t k, int N, int M) { return ((M ? (k + M - 1) / M : 0) * N * idx_bits(M) + 7) / 8; }
  int idx_bits() const { return idx_bits(M); }
  int64_t idx_row_bytes() const { return idx_row_bytes(k, N, M); }
  int nm_index(int64_t j, int64_t q) const {
    const int b = idx_bits();
    const int64_t bit = q * b;
    return idx[size_t(j * idx_row_bytes() + bit / 8)] >> (bit % 8) & ((1 << b) - 1);
  }
};

// From a dense [n, k] (zeros are dropped; nm: every group must have <= N nonzeros).
Error sparse_from_dense(const float* w, int64_t n, int64_t k, SparseFormat f, int N, int M, bool int8,
                        std::unique_ptr<SparseWeight>* out);
// The same sparsity pattern with int8 values (one scale per row).
Error sparse_quantize(const SparseWeight& s, std::unique_ptr<SparseWeight>* out);
// The same pattern with int4 values (bitmask or nm; f32 values in): one f16
// scale per row and group of `group` columns (32, 64 or 128), max|w| / 7 over the
// group's stored values, rounded to f16 before the values are divided by it.
Error sparse_quantize4(const SparseWeight& s, int64_t group, std::unique_ptr<SparseWeight>* out);
// Values quantized to int4 (v in [-7, 7]) packed as stored (v + 8, two per byte).
void sparse_pack4(const int8_t* v, int64_t cnt, uint8_t* out);
// A weight from its arrays as saved (untrusted: every invariant the kernels rely on is
// checked - row pointers, columns < k, mask popcounts, N:M indices, int8 values in
// [-127, 127] - and a violation is an error naming it). Arrays not used by the format
// may be null; counts are in elements.
struct SparseParts {
  SparseFormat format = SparseFormat::csr;
  int64_t n = 0, k = 0, nnz = 0;
  bool int8 = false;
  bool int4 = false;
  int64_t group = 0;                // int4
  int N = 0, M = 0;
  const void* values = nullptr;     // f32 or int8 [nnz]; int4: (nnz + 1) / 2 bytes as stored
  const float* scale = nullptr;     // int8: [n]
  const uint16_t* scale4 = nullptr; // int4: f16 [n, ceil(k / group)]
  const int64_t* row_ptr = nullptr; // csr, bitmask: [n + 1]
  const void* col = nullptr;        // csr: uint16 (narrow) or int32 [nnz]
  bool narrow = false;
  const uint32_t* mask = nullptr;   // bitmask: [n, words]
  const uint8_t* idx = nullptr;     // nm: [n, idx_row_bytes] packed
};
Error sparse_from_parts(const SparseParts& p, std::unique_ptr<SparseWeight>* out);

// The rows of parts[0], then parts[1], ... as one weight (same k, format, value type, N:M).
Error sparse_concat_rows(const std::vector<const SparseWeight*>& parts, std::unique_ptr<SparseWeight>* out);
// Dense [n, k] (dequantized).
void sparse_to_dense(const SparseWeight& s, float* out);
// y[m, n] = x[m, k] . W^T (+ bias[n])
Error spmm(const SparseWeight& s, const float* x, int64_t m, const float* bias, float* y);

// Operands of one kernel call (rows [j0, j1) of W; every ISA computes the
// same epilogue in the same order, so int8 results are identical across paths).
//  m <= 8 (spmv): f32 values read x (m, k); int8 / int4 values read xq (m, ldq) with
//                 zero columns from k up to ldq (ldq a multiple of 64, >= words * 32
//                 and >= k + 4: the AVX2 gathers read 4 bytes at column k - 1, the
//                 AVX-512 kernel 64 bytes per pair of mask words); y (m, n) written.
//                 int4: per group, exact int32 sums scaled by the group's
//                 scale in f32 (the order of that f32 sum is each path's own).
//  m > 8 (spmmt): f32 values read xt (k, m) = x transposed; int8 values read
//                 xqt (k, m) int32; yt (n, m) written. (int4 never comes here:
//                 m < 16 runs spmv 8 rows at a time, m >= 16 the dense GEMM.)
struct SpArgs {
  const float* x = nullptr;
  const int8_t* xq = nullptr;
  const int32_t* xqt = nullptr;
  int64_t ldq = 0;
  const float* xs = nullptr;  // int8: per-row activation scales (m)
  int64_t m = 0;
  const float* bias = nullptr;
  float* y = nullptr;
};
using SpmvFn = void (*)(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1);
void spmv_ref(const SparseWeight&, const SpArgs&, int64_t, int64_t);
void spmv_avx2(const SparseWeight&, const SpArgs&, int64_t, int64_t);
// AVX-512 VBMI2 + VNNI: int8 bitmask and 2:4 by vpexpandb + vpdpbusd; the rest -> spmv_avx2
void spmv_avx512(const SparseWeight&, const SpArgs&, int64_t, int64_t);
using SpmmTFn = void (*)(const SparseWeight& s, const SpArgs& a, int64_t j0, int64_t j1);
void spmmt_ref(const SparseWeight&, const SpArgs&, int64_t, int64_t);
void spmmt_avx2(const SparseWeight&, const SpArgs&, int64_t, int64_t);

// Calls fn(column, value as stored (int8 / int4 unscaled)) for every stored value of row j.
template <class F>
inline void sparse_for_row(const SparseWeight& s, int64_t j, F fn) {
  auto val = [&](int64_t p) { return s.int4 ? float(s.value4(p)) : s.int8 ? float(s.vq[size_t(p)]) : s.vf[size_t(p)]; };
  switch (s.format) {
    case SparseFormat::csr:
      for (int64_t p = s.row_ptr[size_t(j)]; p < s.row_ptr[size_t(j + 1)]; ++p) fn(s.column(p), val(p));
      break;
    case SparseFormat::bitmask: {
      int64_t p = s.row_ptr[size_t(j)];
      const uint32_t* mw = s.mask.data() + j * s.words();
      for (int64_t w = 0; w < s.words(); ++w)
        for (uint32_t bits = mw[w]; bits; bits &= bits - 1) fn(w * 32 + __builtin_ctz(bits), val(p++));
      break;
    }
    case SparseFormat::nm: {
      const int64_t per = s.groups() * s.N, base = j * per;
      for (int64_t q = 0; q < per; ++q) fn((q / s.N) * s.M + s.nm_index(j, q), val(base + q));
      break;
    }
  }
}

// The int8 epilogue every path uses (one rounding: fma), so results agree bit for bit.
inline float sparse_q_out(int64_t acc, float xs, float ws, const float* bias, int64_t j) {
  return std::fma(float(acc), xs * ws, bias ? bias[j] : 0.f);
}

// int8 weights with at least this many activation rows go through the dense
// int8 GEMM, a strip of expanded rows at a time (same quantization; its own
// epilogue rounding).
constexpr int64_t kSparseDenseM = 16;

// Row j of an int8 or int4 weight, dense: out[0, k) (out has room for round_up(k, 64)
// bytes, the AVX-512 expansions store 64 lanes at a time; what lies past k is
// unspecified).
using SpRowFn = void (*)(const SparseWeight& s, int64_t j, int8_t* out);
void sprow_ref(const SparseWeight&, int64_t, int8_t*);
// The scalar expansion every path can fall back to (any format).
inline void sparse_row_i8(const SparseWeight& s, int64_t j, int8_t* out) {
  for (int64_t c = 0; c < s.k; ++c) out[c] = 0;
  sparse_for_row(s, j, [&](int64_t c, float v) {
    if (c < s.k) out[c] = int8_t(v);
  });
}
void sprow_avx2(const SparseWeight&, int64_t, int8_t*);
// AVX-512 VBMI2: int8 bitmask and 2:4 by vpexpandb; the rest -> sprow_avx2
void sprow_avx512(const SparseWeight&, int64_t, int8_t*);

// int32 accumulation stays exact for k up to this (formats.h).
constexpr int64_t kSparseInt8MaxK = kS8MaxGroupK;

}  // namespace sparq
