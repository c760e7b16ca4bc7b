// sparq/formats.h - the packed data formats, defined once for CPU and CUDA code.
//
// int8 weights ("n16k4" layout), used by every int8 GEMM path (AVX2, AVX-VNNI,
// AVX-512 VNNI, AMX): columns of B (= rows of the [n, k] weight) are grouped in
// blocks of 16; inside a block, k runs in steps of 4 and each step stores 16
// columns x 4 consecutive k bytes (64 bytes = one zmm, one AMX tile row):
//
//   data[((nb * (k_pad / 4)) + k4) * 64 + j * 4 + t] = B[nb * 16 + j][k4 * 4 + t]
//
// n_pad = round_up(n, 16), k_pad = round_up(k, max(64, group)); padding is zero.
// For AMX, rows k4 = 16*i .. 16*i+15 of a block form one B tile (16 rows x 64 B).
#pragma once
#include <cstddef>
#include <cstdint>

namespace sparq {

constexpr int64_t kS8BlockN = 16;   // columns per packed block
constexpr int64_t kS8StepK = 4;     // k bytes per column per step
constexpr int64_t kS8AlignK = 64;   // k_pad is a multiple of this (AMX tile width)
constexpr int64_t kS8BlockBytes = kS8BlockN * kS8StepK;
static_assert(kS8BlockBytes == 64, "one packed k-step of a block is one cache line / zmm");

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// int32 sums of int8 weights x activations in [-127, 127] stay exact over this many
// values (127 * 128 * 2^17 < 2^31): the longest scale group an int8 linear (dense or
// sparse) accepts.
constexpr int64_t kS8MaxGroupK = int64_t(1) << 17;

// A prepacked int8 weight matrix B[n, k] (PyTorch nn.Linear layout: [out, in]).
// Quantization contract: W[n, k] ~= scale[n, g] * (B[n, k] - zero[n, g]) with g = k / group.
struct PackedS8 {
  int64_t n = 0, k = 0;          // logical shape
  int64_t n_pad = 0, k_pad = 0;  // padded shape (see above)
  int64_t group = 0;             // k per scale group; == k_pad for one group per row
  int64_t groups = 0;            // number of groups = ceil(k / group) (1 for per-channel)
  int8_t* data = nullptr;        // (n_pad/16, k_pad/4, 16, 4)
  int32_t* colsum = nullptr;     // (n_pad/16, groups, 16): sum over the group of B (u8-shift compensation)
  float* scales = nullptr;       // (n_pad/16, groups, 16) weight scales; nullptr: exact int32 mode
  int32_t* zeros = nullptr;      // (n_pad/16, groups, 16) zero points (asymmetric), nullptr: symmetric
  bool has_m128 = false;         // some B value is -128 (matters for the AVX2 sign trick)
  // lo < hi: every B value lies in [lo, hi] (the expansions of GGUF block types, whose
  // values are bit fields); lo == hi: not known. Narrow ranges let the AVX2 kernel
  // multiply small unsigned codes and sum pair products in int16 (gemm_s8_avx2.cpp).
  int16_t lo = 0, hi = 0;
};

// Offsets of the per-(block, group) vectors of 16.
inline int64_t s8_group_index(int64_t nb, int64_t g, int64_t groups) { return (nb * groups + g) * kS8BlockN; }

// Q8_0 (GGUF-compatible): 32 int8 values with one f16 scale.
constexpr int kQK8_0 = 32;
struct BlockQ8_0 {
  uint16_t d;          // f16 scale
  int8_t qs[kQK8_0];   // values
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes as in GGUF");
constexpr int kQ8_0Bytes = int(sizeof(BlockQ8_0));  // the one place its size is stated

}  // namespace sparq
