// kernels.h - the internal kernel ABI shared by the scalar references, the x86
// ISA files and the drivers. One function table per process (dispatch.cpp).
#pragma once
#include <cstdint>
#include <functional>

#include "sparq/formats.h"
#include "sparq/sparq.h"
#include "q4.h"
#include "quants.h"
#include "sparse.h"

namespace sparq {

enum class Isa : int { ref = 0, avx2 = 1, avxvnni = 2, avx512vnni = 3, amx = 4 };
const char* isa_name(Isa isa);

// --- int8 GEMM -------------------------------------------------------------
// C = A x B^T with A the quantized activations (row-major) and B a PackedS8.
// A bytes are int8, or int8 + 128 stored as uint8 when the kernel's table
// entry says a_u8 (VNNI: vpdpbusd multiplies u8 x s8); the kernel then
// subtracts 128 * colsum. Columns k >= b->k of A must be zero (as int8).
//
// exact mode (ci != nullptr): ci[i, j] = sum_k A[i,k] * B[j,k]       (requires b->groups == 1)
// f32 mode   (c  != nullptr): c[i, j]  = a_scale[i] * sum_g b->scales[j,g] * acc_g[i,j] (+ bias[j])
// Zero points (b->zeros) are NOT applied by kernels; the driver corrects for them.
struct GemmS8Args {
  const uint8_t* a = nullptr;   // (m, lda) bytes, lda >= b->k_pad, lda % 64 == 0
  int64_t lda = 0;
  int64_t m = 0;
  const PackedS8* b = nullptr;
  const float* a_scale = nullptr;  // (m) per-row activation scales [f32 mode]
  // (m, b->groups) per-row, per-group activation scales [f32 mode, groups > 1], or nullptr:
  // c[i, j] = a_scale[i] * sum_g (b->scales[j,g] * a_gscale[i,g]) * acc_g[i,j] (+ bias[j])
  const float* a_gscale = nullptr;
  const float* bias = nullptr;     // (n) or nullptr                 [f32 mode]
  float* c = nullptr;              // (m, ldc) f32 output
  int32_t* ci = nullptr;           // (m, ldc) int32 output
  int64_t ldc = 0;
  bool a_has_m128 = false;  // some A value is -128 (AVX2 sign trick orientation)
  // (m, b->groups) sums of each group's A values as signed bytes, or nullptr: lets a
  // kernel shift B values in [b->lo, b->hi] with b->lo < 0 to codes >= 0 and take
  // -lo x the sum back (the AVX2 kernel's small-code path)
  const int32_t* a_gsum = nullptr;
};
// Computes rows [m0, m1) and column blocks [nb0, nb1) (16 columns each; only
// columns < b->n are written). Called concurrently from pool threads on
// disjoint ranges. nb1 <= s8_blocks(*b): every block handed to a kernel holds
// 1..16 columns < n (blocks wholly in the padding are never passed, even when
// the allocation has them, as a strip of linear_s8_expanded does).
inline int64_t s8_blocks(const PackedS8& b) { return (b.n + kS8BlockN - 1) / kS8BlockN; }
using GemmS8Fn = void (*)(const GemmS8Args& args, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1);

void gemm_s8_ref(const GemmS8Args&, int64_t, int64_t, int64_t, int64_t);
void gemm_s8_avx2(const GemmS8Args&, int64_t, int64_t, int64_t, int64_t);
void gemm_s8_avxvnni(const GemmS8Args&, int64_t, int64_t, int64_t, int64_t);
void gemm_s8_avx512vnni(const GemmS8Args&, int64_t, int64_t, int64_t, int64_t);
void gemm_s8_amx(const GemmS8Args&, int64_t, int64_t, int64_t, int64_t);

// One packed n16k4 block from 16 int8 rows (row jj at rows + jj * ld, k_pad bytes,
// k_pad % 64 == 0): blk[(s * 16 + jj) * 4 + b] = row jj's value 4 s + b (k_pad * 16
// bytes), and colsum[g * 16 + jj] = the sum of row jj over group g's values
// [g * group, min((g + 1) * group, k_pad)) for g < groups (group % 4 == 0). Returns
// whether any value is -128 (PackedS8::has_m128).
using PackS8BlockFn = bool (*)(const int8_t* rows, int64_t ld, int64_t k_pad, int64_t group, int64_t groups, int8_t* blk,
                               int32_t* colsum);
bool pack_s8_block_ref(const int8_t*, int64_t, int64_t, int64_t, int64_t, int8_t*, int32_t*);
bool pack_s8_block_avx2(const int8_t*, int64_t, int64_t, int64_t, int64_t, int8_t*, int32_t*);

// --- f32 GEMM --------------------------------------------------------------
// c[i, j] = sum_p a[i, p] * B[p, j] (+ bias[j]) where B is packed in panels of
// 16 columns: bp[(nb * k + p) * 16 + jj] = B[p, nb * 16 + jj] (zero-padded).
// accumulate: c[i, j] += sum_p a[i, p] * B[p, j] instead (bias must be nullptr).
struct SgemmArgs {
  const float* a = nullptr;   // (m, lda)
  int64_t lda = 0;
  const float* bp = nullptr;  // (n_pad / 16, k, 16)
  int64_t m = 0, n = 0, k = 0;
  const float* bias = nullptr;  // (n) or nullptr
  float* c = nullptr;           // (m, ldc)
  int64_t ldc = 0;
  bool accumulate = false;
};
using SgemmFn = void (*)(const SgemmArgs& args, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1);
// The whole product over pool tasks (fn: a table's sgemm).
void run_sgemm(SgemmFn fn, const SgemmArgs& args);
void sgemm_ref(const SgemmArgs&, int64_t, int64_t, int64_t, int64_t);
void sgemm_avx2(const SgemmArgs&, int64_t, int64_t, int64_t, int64_t);
void sgemm_avx512(const SgemmArgs&, int64_t, int64_t, int64_t, int64_t);

// Row-dot form for small m (decode): c[i, j] = sum_p x[i, p] * w[j, p] (+ bias[j]),
// w row-major [n, k] (nn.Linear layout, unpacked). Rows [m0,m1) x columns [n0,n1).
struct SgemvArgs {
  const float* x = nullptr;  // (m, ldx)
  int64_t ldx = 0;
  const float* w = nullptr;  // (n, ldw)
  int64_t ldw = 0;
  int64_t m = 0, n = 0, k = 0;
  const float* bias = nullptr;
  float* c = nullptr;  // (m, ldc)
  int64_t ldc = 0;
};
using SgemvFn = void (*)(const SgemvArgs& args, int64_t n0, int64_t n1);
void sgemv_ref(const SgemvArgs&, int64_t, int64_t);
void sgemv_avx2(const SgemvArgs&, int64_t, int64_t);
void sgemv_avx512(const SgemvArgs&, int64_t, int64_t);

// --- dynamic per-row activation quantization --------------------------------
// For each row i: s = max|x[i,:]| / 127 (1 if the row is all zero), q = round(x / s)
// clamped to [-127, 127], written to out[i, 0..k) (+128 as u8 when shift128),
// out[i, k..k_pad) = 0 (as int8). scale[i] = s. If static_scale > 0 it is used
// for every row instead (static per-tensor quantization), values clamped.
struct QuantRowsArgs {
  const float* x = nullptr;  // (m, ldx)
  int64_t ldx = 0;
  int64_t m = 0, k = 0, k_pad = 0;
  uint8_t* out = nullptr;  // (m, ldo)
  int64_t ldo = 0;
  float* scale = nullptr;  // (m)
  int32_t* rowsum = nullptr;  // (m, groups) sum of int8 values per group of `group` (or nullptr)
  int64_t group = 0, groups = 0;
  float static_scale = 0.f;
  bool shift128 = false;
};
using QuantRowsFn = void (*)(const QuantRowsArgs& args, int64_t m0, int64_t m1);
void quant_rows_ref(const QuantRowsArgs&, int64_t, int64_t);
void quant_rows_avx2(const QuantRowsArgs&, int64_t, int64_t);

// --- small ops of the decoder (rows are independent; called on row ranges) ---
// rmsnorm: y[r,:] = x[r,:] * w / sqrt(mean(x[r,:]^2) + eps)          x, y: (rows, d)
using RmsNormFn = void (*)(const float* x, const float* w, float* y, int64_t d, float eps, int64_t r0, int64_t r1);
// softmax over each row (max subtracted first)                         x, y: (rows, n)
using SoftmaxFn = void (*)(const float* x, float* y, int64_t n, int64_t r0, int64_t r1);
// y[i] = silu(a[i]) * b[i] = a[i] / (1 + exp(-a[i])) * b[i], i in [i0, i1)
using SwigluFn = void (*)(const float* a, const float* b, float* y, int64_t i0, int64_t i1);
// y[i] = a[i] + b[i], i in [i0, i1)
using AddFn = void (*)(const float* a, const float* b, float* y, int64_t i0, int64_t i1);
// y[i] = x[i] as IEEE half, round to nearest even (overflow -> inf, NaN -> a NaN), i < n
using ToHalfFn = void (*)(const float* x, uint16_t* y, int64_t n);
// sparq.h argmax_f32 (n >= 1)
using ArgmaxFn = int64_t (*)(const float* x, int64_t n);
void rmsnorm_ref(const float*, const float*, float*, int64_t, float, int64_t, int64_t);
void softmax_ref(const float*, float*, int64_t, int64_t, int64_t);
void swiglu_ref(const float*, const float*, float*, int64_t, int64_t);
void add_ref(const float*, const float*, float*, int64_t, int64_t);
void to_half_ref(const float*, uint16_t*, int64_t);
int64_t argmax_ref(const float*, int64_t);
void rmsnorm_avx2(const float*, const float*, float*, int64_t, float, int64_t, int64_t);
void softmax_avx2(const float*, float*, int64_t, int64_t, int64_t);
void swiglu_avx2(const float*, const float*, float*, int64_t, int64_t);
void add_avx2(const float*, const float*, float*, int64_t, int64_t);
void to_half_avx2(const float*, uint16_t*, int64_t);  // F16C
int64_t argmax_avx2(const float*, int64_t);

// --- attention (one task: a set of query rows over a range of keys) ----------
// The rows share one key/value head (rows of the g query heads of a group and
// of consecutive positions). The kernel runs the online softmax over keys
// [j0, j1) and leaves unnormalised results: o[r, :] = sum_j p_j v_j with
// p_j = exp(s_j - m[r]), l[r] = sum_j p_j, m[r] = the running max (-inf when
// row r saw no key). Scores s_j = q_r . k_j (q already multiplied by the
// scale) + mask[r][j]; keys j >= limit[r] are invisible (causal).
constexpr int64_t kAttnBlock = 64;  // keys per tile
// The decode row paths' prefetches (AVX2 and AVX-512) as they score keys jj ..
// jj + nk of a tile whose rows are rb bytes: key rows 8 ahead into L1 (avail:
// rows readable from k on), and, when next_k is set, the same rows of the next
// tile's keys and values (next_v bytes after its keys) into L2: the out-of-order
// window alone keeps too few lines in flight for decode.
inline void attn_row_prefetch(const char* k, int64_t rb, int64_t jj, int64_t nk, int64_t avail, const char* next_k,
                              int64_t next_v, int64_t next_rows) {
  const int64_t ahead = jj + 8 + nk < avail ? jj + 8 + nk : avail;
  for (int64_t off = (jj + 8) * rb; off < ahead * rb; off += 64) __builtin_prefetch(k + off, 0, 3);  // prefetcht0
  if (!next_k) return;
  const int64_t r1 = jj + nk < next_rows ? jj + nk : next_rows;
  for (int64_t off = (jj < next_rows ? jj : next_rows) * rb; off < r1 * rb; off += 64) {
    __builtin_prefetch(next_k + off, 0, 2);  // prefetcht1
    if (next_v) __builtin_prefetch(next_k + next_v + off, 0, 2);  // 0: the caller fetches the values itself
  }
}
struct AttnTaskArgs {
  const float* const* q = nullptr;  // [rows] pointers to d floats (unscaled)
  float scale = 1.f;
  int64_t rows = 0, d = 0;
  const int64_t* limit = nullptr;        // [rows]
  const float* const* mask = nullptr;    // [rows] pointers indexed by key j, or nullptr
  KvType type = KvType::f32;
  const void* k = nullptr;               // row j at element offset j * d
  const void* v = nullptr;
  const float* k_scale = nullptr;        // i8: [j]
  const float* v_scale = nullptr;
  int64_t j0 = 0, j1 = 0;
  float* o = nullptr;                    // [rows, d]
  float* m = nullptr;                    // [rows]
  float* l = nullptr;                    // [rows]
  float* work = nullptr;                 // attn_work_floats(rows, d) floats, 64-byte aligned
};
using AttnFn = void (*)(const AttnTaskArgs& args);
// Scratch each task needs (queries, scores and two converted key/value tiles).
inline int64_t attn_work_floats(int64_t rows, int64_t d) {
  const int64_t rp = (rows + 15) / 16 * 16, dp = (d + 15) / 16 * 16;
  return rp * dp * 2 + kAttnBlock * rp * 2 + 2 * kAttnBlock * dp + 4 * rp + 256;
}
void attn_ref(const AttnTaskArgs&);
void attn_avx2(const AttnTaskArgs&);
void attn_avx512(const AttnTaskArgs&);  // tile shape in AVX-512; fewer rows -> attn_avx2

// Packs symmetric int8 rows [r0, r1) (values [rows, k], scales [rows, groups]) into p
// (allocated by PackedWeight::create); returns whether any value is -128.
bool pack_s8_rows(PackedS8& p, int64_t r0, int64_t r1, const int8_t* rows, const float* scales);

struct KernelTable;
// Dynamic per-row int8 activations (QuantRowsArgs without groups or a static scale):
// x (m, k) -> out (m, ldo) with zeros from k to ldo (+128 as u8 when shift128), scale (m).
// Few rows run on the calling thread, more over the pool.
void quantize_activations(const KernelTable& t, const float* x, int64_t m, int64_t k, int64_t ldo, bool shift128, void* out,
                          float* scale);
// The f32-mode int8 GEMM over pool tasks: c[i, j] (row stride ldc) = a_scale[i] * b.scales[j] *
// (A . B^T)[i, j] + bias[j], with A quantized per QuantRowsArgs (shift128 = t.gemm_s8_a_u8,
// lda = b.k_pad, clamped to [-127, 127]) and b symmetric per-channel.
void run_linear_s8(const KernelTable& t, const uint8_t* a, const float* a_scale, int64_t m, const PackedS8& b, const float* bias,
                   float* c, int64_t ldc, const float* a_gscale = nullptr, const int32_t* a_gsum = nullptr);
// The int8 linear of a weight kept in another format (4-bit, sparse): strips of
// about 1 MiB of W are expanded to int8 rows, packed and multiplied by the dense
// int8 GEMM, so prefill runs at dense int8 speed with scratch that stays small
// (the expansion is O(n k), the product O(m n k)). expand(j, row, scales) writes
// row j's k values in [-127, 127] and its groups' scales (one when group is 0).
// row has room for k_pad >= round_up(k, 64) bytes: expand may write up to
// round_up(k, 64) (q4_row, sprow write whole 32- or 64-value blocks); the driver zeroes
// [k, k_pad) afterwards. Each strip is packed as a weight of its own (n = its
// rows, n_pad = round_up(n, 16)), so no kernel sees a block past its last row.
// lo < hi: every value expand writes lies in [lo, hi] (PackedS8::lo / hi: a kernel
// may then use narrower arithmetic; 4-bit values pass [-8, 7]).
using ExpandRowFn = std::function<void(int64_t j, int8_t* row, float* scales)>;
Error linear_s8_expanded(int64_t n, int64_t k, int64_t group, const ExpandRowFn& expand, const float* x, int64_t m,
                         const float* bias, float* y, int lo = 0, int hi = 0);
// The same for weights with f32 offsets per group (GGUF block types): expand(j, row,
// scales, offsets) writes row j's k int8 values and its groups' scales, and its
// groups' offsets (w = scale * q + offset) when `offsets`. The activations are
// quantized per block of `act` values (32 or 256: quants.h), one scale per row and
// group (group is 16 or 32).
using ExpandBlockRowFn = std::function<void(int64_t j, int8_t* row, float* scales, float* offsets)>;
// pack16 (optional; n % 16 == 0): packs rows [j0, j0 + 16) straight into one block
// of the packed layout - blk (k_pad * 16 bytes), colsum, scales and (when
// `offsets`) the offsets (groups x 16 each, as PackedS8 holds them / the offsets'
// B panels) - in place of expand + pack_s8_block; returns whether a value is -128.
using Pack16Fn = std::function<bool(int64_t j0, int64_t k_pad, int8_t* blk, int32_t* colsum, float* scales, float* offsets)>;
// lo < hi: every expanded value lies in [lo, hi] (PackedS8::lo / hi).
Error linear_s8_expanded_blocks(int64_t n, int64_t k, int64_t group, int64_t act, const ExpandBlockRowFn& expand, bool offsets,
                                const float* x, int64_t m, float* y, const Pack16Fn& pack16 = nullptr, int lo = 0, int hi = 0);
// Bytes of expanded weight per strip (0: the default, 1 MiB). Tests make it small so
// that small shapes walk many strips, the last one short.
void set_expand_strip_bytes(int64_t bytes);

// --- the table ------------------------------------------------------------
struct KernelTable {
  Isa isa = Isa::ref;          // int8 GEMM path
  GemmS8Fn gemm_s8 = nullptr;
  PackS8BlockFn pack_s8_block = nullptr;  // the expansion of other formats into gemm_s8's layout
  bool gemm_s8_a_u8 = false;   // A passed as int8 + 128
  bool gemm_s8_sign_trick = false;  // kernel is wrong when A and B both hold -128
  int gemm_s8_task_rows = 64;       // preferred rows x 16-column blocks per pool task
  int gemm_s8_task_blocks = 4;      // (larger for AMX: each task must amortise B and A traffic)
  const char* sgemm_name = "ref";
  SgemmFn sgemm = nullptr;
  SgemvFn sgemv = nullptr;
  QuantRowsFn quant_rows = nullptr;
  RmsNormFn rmsnorm = nullptr;
  SoftmaxFn softmax = nullptr;
  SwigluFn swiglu = nullptr;
  AddFn add = nullptr;
  ToHalfFn to_half = nullptr;
  ArgmaxFn argmax = nullptr;
  AttnFn attn = nullptr;
  SpmvFn spmv = nullptr;
  SpmmTFn spmmt = nullptr;
  SpRowFn sprow = nullptr;
  Q4Fn q4_gemv = nullptr;
  BlockGemvFn block_gemv = nullptr;      // GGUF block formats (quants.h)
  BlockDecodeRowFn block_decode_row = nullptr;
  BlockQuantFn block_quant = nullptr;
  X16PackFn x16_pack = nullptr;          // x16 groups straight into the packed int8 layout
  // Bits 1 << GgmlType of the types block_gemv reads in the x16 layout natively
  // (the loader repacks those; quants.h block_x16_preferred)
  uint32_t block_x16_types = 1u << int(GgmlType::q4_0) | 1u << int(GgmlType::q4_k);
  const char* attn_name = "ref";
  const char* sparse_name = "ref";
};

}  // namespace sparq
