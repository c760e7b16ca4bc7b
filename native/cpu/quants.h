// quants.h - the GGUF block formats (ggml's weight types), one table row each.
//
// A row of k weights is k / block consecutive blocks, exactly as a GGUF file
// stores it; sparq multiplies by the values ggml's dequantize_row_* gives
// (to_f32 below is that reference). Every type decodes a row to one common
// form the kernels share:
//
//   w[i] = scale[i / 16] * q[i] + offset[i / 16]        q int8 in [-127, 127]
//
// (groups of 16: the K types' smallest sub-block; a 32-value sub-block is two
// groups with equal scales). Decoding is exact: the f32 products and sums are
// the ones ggml's dequantizer rounds (a * q then + b, never fused).
//
// Activation contract (every type, every m): x is quantized to int8 per block
// of `act` = 32 values, scale = max|x| / 127, x * 127 / max|x| rounded to
// nearest even. ggml quantizes activations per 32 (Q8_0 / Q8_1) for Q4_0 .. Q8_0
// and IQ4_NL but per 256 (Q8_K) for the K types and IQ4_XS; blocks of 32 there
// cost ~1.35x in the K GEMV (one cvt + fma per 32 values instead of per 256) and
// bring the logits ~28% closer to a float64 forward than llama.cpp's (measured:
// scripts/accuracy-llamacpp.ts, docs/PERFORMANCE.md). Int32 sums per 32 values
// (integer sub-block scales applied by vpmaddwd) are exact; they are scaled in
// f32. Decode (m <= kBlockGemvMaxM) reads the blocks in place; prefill decodes
// strips of rows to int8 + group scales for the int8 GEMM (one activation
// scale per row and group) and adds the offsets as an f32 product of the
// activation group sums.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "sparq/sparq.h"

namespace sparq {

// GGUF / ggml type ids (ggml.h enum ggml_type).
enum class GgmlType : int {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, iq4_nl = 20, iq4_xs = 23, bf16 = 30,
};
constexpr int kGgmlGroup = 16;  // values per scale / offset group of the decoded form

// Row j of a decoded weight: q [k] int8, scale / offset [k / 16] f32.
struct DecodedRow {
  int8_t* q = nullptr;
  float* scale = nullptr;
  float* offset = nullptr;  // all zero for symmetric types
};

struct BlockFormat {
  GgmlType type;
  const char* name;     // ggml's name: "Q4_K"
  int block;            // values per block
  int bytes;            // bytes per block
  int group;            // values per distinct decoded scale: 16 (Q2_K, Q3_K, Q6_K) or 32 (0 for F32 / F16 / BF16)
  int act;              // activation block (values per activation scale: 32, see the contract above)
  bool offsets;         // decoded offsets can be non-zero (q4_1, q5_1, q2_k, q4_k, q5_k)
  bool quantized;       // a block type (decode / quantize exist); false: f32, f16, bf16
  // The reference dequantizer: `blocks` blocks -> blocks * block floats (ggml's dequantize_row_*).
  void (*to_f32)(const uint8_t* src, int64_t blocks, float* out);
  // The decoded form of `blocks` blocks (q, scale and offset advance by block, block / 16).
  void (*decode)(const uint8_t* src, int64_t blocks, DecodedRow out);
  // Round-to-nearest quantizer of `blocks` blocks (for writing GGUF files; see quants.cpp).
  void (*quantize)(const float* x, int64_t blocks, uint8_t* out);
  // The range of the decoded int8 values (decode's q; the x16 packers write the same):
  // the bit fields bound them (lo == hi: not bounded below int8's own range).
  int lo = 0, hi = 0;
};

// The row of `type`, or nullptr for a type sparq does not know.
const BlockFormat* block_format(int type);
// Every row, in type order (count in *n).
const BlockFormat* block_formats(int* n);
// "Q4_K" or "type 99".
std::string ggml_type_name(int type);

// A linear weight [n, k] kept in GGUF blocks (rows of k / block blocks, row_bytes apart).
// The memory is not owned (the file image or a storage the caller keeps alive).
struct BlockWeight {
  const BlockFormat* fmt = nullptr;
  int64_t n = 0, k = 0, row_bytes = 0;
  const uint8_t* data = nullptr;
  // Rows repacked 16 at a time (the "x16" layout below) instead of as stored.
  bool x16 = false;
  size_t bytes() const { return size_t(n * row_bytes); }
};

// The x16 layout: a lossless repack, made once at load, of Q4_0 and Q4_K weights
// whose n is a multiple of 16, for the GEMV (16 rows per vector, one vpdpbusd
// per 4 values of 16 rows; llama.cpp's CPU "repack" buffers do the same) and
// the prefill (a nibble split gives the int8 GEMM's packed blocks). The same
// bytes as stored (Q6_K: the same bits), rearranged per group of 16 rows (16 x
// row_bytes):
//   Q4_0: units of 8 blocks (2304 bytes; the last unit has the blocks left):
//         the unit's f16 scales [blocks][16 rows], then its codes [blocks][4]
//         [16 rows][4 bytes], byte c of row r in quarter s being the block's
//         code byte 4s + c (low nibble: value 4s + c, high: 16 + 4s + c);
//   Q4_K: per super-block (2304 bytes) d [16] and dmin [16] f16, the 12 scale
//         bytes as planes [12][16 rows], then the codes [4 chunks][8][16
//         rows][4 bytes], byte c of row r in slot t of chunk j being qs byte
//         32j + 4t + c (low nibble: value 64j + 4t + c, high: + 32);
//   Q5_K: per super-block (2816 bytes) Q4_K's d, dmin and scale planes, then
//         the 5-bit codes five to a plane: planes [5 p][8 slots t][16 rows][4
//         bytes]. Byte c of slot t of plane p holds, for l = 4t + c, code q(p)
//         (value 32p + l) in its low 5 bits and a 3-bit fragment of q(5), q(6),
//         q(7) in its top 3 (plane 0: q5 bits 0-2; 1: q5 bits 3-4, q6 bit 0; 2:
//         q6 bits 1-3; 3: q6 bit 4, q7 bits 0-1; 4: q7 bits 2-4); q = the 5-bit
//         code of ggml's dequantize_row_q5_K (qs nibble | qh bit << 4). Five
//         codes of eight are one mask, the others 5-8 ops (not a byte shuffle
//         of the stored bytes: quants.cpp's q5_planes / q5_unplanes);
//   Q6_K: per super-block (3360 bytes) d [16] f16, the 16 int8 scales as planes
//         [16][16 rows], then the 6-bit codes of each half n (values 128n ..
//         128n + 127) three to a plane: planes [2 halves n][3 p][8 slots t][16
//         rows][4 bytes]. Byte c of slot t of plane p holds, for l = 4t + c,
//         code q(p) (value 128n + 32p + l) in its low 6 bits and bits 2p, 2p + 1
//         of code q(3) (value 128n + 96 + l) in its top 2 bits; q = the 6-bit
//         code of ggml's dequantize_row_q6_K (ql nibble | qh bit pair << 4).
//         Three codes of four are then one mask, the fourth three (not a byte
//         shuffle of the stored bytes: quants.cpp's q6_planes / q6_unplanes);
//   Q8_0: per block (544 bytes) d [16] f16, then the codes [8][16 rows][4 bytes]
//         (byte c of slot t: qs byte 4t + c).
// A slot is thus, per row, 4 bytes of one vpdpbusd lane (AVX-512: one vector is a
// slot of all 16 rows). Types are repacked only where the GEMV has x16 bodies
// for them (KernelTable::block_x16_types: Q4_0 and Q4_K on every table, Q5_K, Q6_K and
// Q8_0 on the AVX2, AVX-VNNI and AVX-512 ones). The prefill of Q5_K, Q6_K and Q8_0 gathers the
// stored rows back (block_row) and decodes them as stored.
constexpr int64_t kX16Rows = 16;
// Q4_0 x16: blocks per unit, and where block b's 16 scales and 256 code bytes
// start in a group of nb blocks (one stream per group, as in Q4_K's super-blocks).
constexpr int64_t kX16Q4Unit = 8, kX16Q4UnitBytes = kX16Q4Unit * kX16Rows * 18;
// blocks in the unit that holds block b (the last unit: those left)
inline int64_t x16_q4_0_unit_blocks(int64_t nb, int64_t b) { return nb - b / kX16Q4Unit * kX16Q4Unit < kX16Q4Unit ? nb - b / kX16Q4Unit * kX16Q4Unit : kX16Q4Unit; }
inline int64_t x16_q4_0_scales_at(int64_t b) { return b / kX16Q4Unit * kX16Q4UnitBytes + b % kX16Q4Unit * 32; }
inline int64_t x16_q4_0_codes_at(int64_t nb, int64_t b) {
  return b / kX16Q4Unit * kX16Q4UnitBytes + x16_q4_0_unit_blocks(nb, b) * 32 + b % kX16Q4Unit * 256;
}
// Q5_K x16: where a super-block's code planes start (after d, dmin and the scale planes)
constexpr int64_t kX16Q5Codes = 256;
// Q6_K x16: where a super-block's scale planes and code planes start (32 and 288 of 3360 bytes)
constexpr int64_t kX16Q6Sc = 2 * kX16Rows, kX16Q6Codes = kX16Q6Sc + 16 * kX16Rows;
// The code planes of one stored Q6_K / Q5_K block (the x16 layouts above: 192 /
// 160 bytes, [p][l] per half / block) and back to the block's ql, qh / qh, qs.
// portable: the plain C++ versions (what a build without SSE2 runs; test_ops
// checks that both agree).
void q6_planes(const uint8_t* blk, uint8_t* out, bool portable = false);
void q6_unplanes(const uint8_t* in, uint8_t* blk, bool portable = false);
void q5_planes(const uint8_t* blk, uint8_t* out, bool portable = false);
void q5_unplanes(const uint8_t* in, uint8_t* blk, bool portable = false);
// Whether w (as stored) can be repacked to x16 (Q4_0, Q4_K, Q5_K, Q6_K, Q8_0; n % 16 == 0).
bool block_x16_supported(const BlockWeight& w);
// Whether the model loader repacks w: supported, and the GEMV of this CPU's
// kernel table reads that type's x16 layout natively.
bool block_x16_preferred(const BlockWeight& w);
// Whether the prefill packs this type's x16 groups straight into the int8
// GEMM's blocks (x16_pack: every x16 type), not gathering the stored rows back.
inline bool block_x16_packs(GgmlType t) {
  return t == GgmlType::q4_0 || t == GgmlType::q4_k || t == GgmlType::q5_k || t == GgmlType::q6_k || t == GgmlType::q8_0;
}
// w (as stored) repacked into memory this weight owns (2 MiB aligned, huge pages
// where the kernel gives them); the stored rows are only read.
Error block_repack_x16(const BlockWeight& w, std::shared_ptr<const BlockWeight>* out);
// Row j's blocks as a GGUF file stores them: in place, or (x16) gathered into tmp
// (row_bytes bytes).
const uint8_t* block_row(const BlockWeight& w, int64_t j, uint8_t* tmp);

// Checks the shape against the type (k a multiple of the block) and fills w.
Error block_weight(int type, int64_t n, int64_t k, const void* data, BlockWeight* w);
// y[m, n] = x[m, k] . W^T (see the activation contract above).
Error linear_blocks(const BlockWeight& w, const float* x, int64_t m, float* y);
constexpr int64_t kBlockGemvMaxM = 8;

// Dequantizes `count` values of any known type (count a multiple of its block).
Error ggml_to_f32(const void* src, int type, int64_t count, float* out);
// Quantizes rows [n, k] of f32 into `type` blocks (n * k / block * bytes bytes).
Error ggml_quantize(const float* x, int type, int64_t n, int64_t k, uint8_t* out);

// --- kernels (kernels.h table slot `block_gemv`) ----------------------------------
// Activations quantized per block of 32 for the decode GEMV.
struct BlockActs {
  const int8_t* q = nullptr;    // (m, k)
  const float* s = nullptr;     // (m, k / act) block scales
  const float* so = nullptr;    // (m, k / 16) s of the group's block * int sum of the group's q (the f32 offset terms)
  const float* so32 = nullptr;  // (m, k / 32) the same per 32 values (so[2b] + so[2b + 1])
  int64_t m = 0, k = 0, act = 32;
};
struct BlockGemvArgs {
  const BlockWeight* w = nullptr;
  BlockActs x;
  float* y = nullptr;  // (m, ldy)
  int64_t ldy = 0;
};
// Rows [j0, j1) of W against all m activation rows.
using BlockGemvFn = void (*)(const BlockGemvArgs& a, int64_t j0, int64_t j1);  // x16: j0, j1 multiples of 16
void block_gemv_ref(const BlockGemvArgs&, int64_t, int64_t);
void block_gemv_avx2(const BlockGemvArgs&, int64_t, int64_t);
void block_gemv_avx512(const BlockGemvArgs&, int64_t, int64_t);  // AVX-512 VNNI
// Activations [m, k] -> the BlockActs arrays, blocks of `act` values (32 or 256; k % act == 0).
struct BlockActsOut {
  int8_t* q;
  float* s;
  float* so;
  float* so32;
};
using BlockQuantFn = void (*)(const float* x, int64_t m, int64_t k, int64_t act, const BlockActsOut& out);
void block_quant_ref(const float*, int64_t, int64_t, int64_t, const BlockActsOut&);
void block_quant_avx2(const float*, int64_t, int64_t, int64_t, const BlockActsOut&);
// Bytes of the BlockActs arrays of m rows (one allocation, see block_acts_layout).
size_t block_acts_bytes(int64_t m, int64_t k, int64_t act);
// Lays out the arrays in `mem` (block_acts_bytes of it, 64-byte aligned).
BlockActsOut block_acts_layout(void* mem, int64_t m, int64_t k, int64_t act);
// One x16 group of 16 rows of `type` (block_x16_packs; k values each) as one block
// of the packed int8 layout (sparq/formats.h, groups of the type's `group`, 16 or
// 32): blk[(s * 16 + r) * 4 + c] = value 4s + c of row r in the decoded form
// (block_decode's q: Q4_0 code - 8, Q6_K code - 32, the code otherwise) (k_pad *
// 16 bytes, steps past k zero); per group g colsum[g * 16 + r] = the sum of row
// r's values there, scales[g * 16 + r] its decoded scale and (types with
// offsets: Q4_K, Q5_K) offsets[g * 16 + r] its decoded offset. Returns whether a
// value is -128 (Q8_0 only; the GEMM's sign trick then takes another path).
using X16PackFn = bool (*)(GgmlType type, const uint8_t* group, int64_t k, int64_t k_pad, int8_t* blk, int32_t* colsum, float* scales,
                           float* offsets);
bool x16_pack_ref(GgmlType, const uint8_t*, int64_t, int64_t, int8_t*, int32_t*, float*, float*);
bool x16_pack_avx2(GgmlType, const uint8_t*, int64_t, int64_t, int8_t*, int32_t*, float*, float*);
bool x16_pack_avx512(GgmlType, const uint8_t*, int64_t, int64_t, int8_t*, int32_t*, float*, float*);
// One row (k values) decoded (the prefill strips, expanded to int8 for the int8 GEMM).
using BlockDecodeRowFn = void (*)(const BlockFormat& f, const uint8_t* row, int64_t k, DecodedRow out);
void block_decode_ref(const BlockFormat&, const uint8_t*, int64_t, DecodedRow);
void block_decode_row_avx2(const BlockFormat&, const uint8_t*, int64_t, DecodedRow);

}  // namespace sparq
