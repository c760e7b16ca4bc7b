// q4.h - 4-bit weights: symmetric int4 in [-7, 7] with one f32 scale per group
// of 32, 64 or 128 along k (the last group may be partial), packed two per
// byte. Each row is k_pad = round_up(k, 32) values in blocks of 32 stored in
// 16 bytes: byte i holds value i in its low nibble and value i + 16 in its
// high nibble, as v + 8 (so 8 is zero; 0 never appears).
// Products follow the int8 contract: activations quantized per row on the
// fly, exact int32 sums per group, y = xs[i] * sum_g scale[j, g] * acc_g.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "sparq/sparq.h"

namespace sparq {

struct PackedQ4 {
  int64_t n = 0, k = 0, k_pad = 0, group = 0, groups = 0;
  std::vector<uint8_t> data;  // n * k_pad / 2 (+ 32 bytes of slack; kernels read whole rows only)
  std::vector<float> scale;   // n * groups
  int64_t row_bytes() const { return k_pad / 2; }
  size_t bytes() const { return data.size() + scale.size() * 4; }
};

// From integer values q [n, k] in [-7, 7] and scales [n, groups] (checked).
Error q4_pack(const int8_t* q, const float* scales, int64_t n, int64_t k, int64_t group, std::unique_ptr<PackedQ4>* out);
// From saved nibble rows [n, k_pad / 2] and scales (untrusted: a 0 nibble is an error).
Error q4_from_nibbles(const uint8_t* nib, const float* scales, int64_t n, int64_t k, int64_t group, std::unique_ptr<PackedQ4>* out);
// Round-to-nearest: scale = max|w| / 7 per group.
Error q4_quantize(const float* w, int64_t n, int64_t k, int64_t group, std::unique_ptr<PackedQ4>* out);
// The integer values [n, k].
void q4_unpack(const PackedQ4& p, int8_t* q);
// Row j's values [k_pad] (zeros past k).
void q4_row(const PackedQ4& p, int64_t j, int8_t* out);
// From this many activation rows on, W is expanded to int8 for the dense int8 GEMM.
constexpr int64_t kQ4DenseM = 16;
// y[m, n] = x[m, k] . W^T with dynamic per-row int8 activations.
Error linear_q4(const PackedQ4& w, const float* x, int64_t m, float* y);

// Kernels for m <= 8: rows [j0, j1) of W; xq (m, ldq) int8 with zeros from k to k_pad.
struct Q4Args {
  const PackedQ4* w = nullptr;
  const int8_t* xq = nullptr;
  int64_t ldq = 0;
  const float* xs = nullptr;
  const int32_t* xsum = nullptr;  // (m, groups): sum of each group of xq (the kernels may use unsigned nibbles)
  int64_t m = 0;
  float* y = nullptr;  // (m, n)
};
using Q4Fn = void (*)(const Q4Args& a, int64_t j0, int64_t j1);
void q4_gemv_ref(const Q4Args&, int64_t, int64_t);
// The value (-8 .. 7) of row j, column c.
inline int q4_value(const PackedQ4& p, int64_t j, int64_t c) {
  const uint8_t b = p.data[size_t(j * p.row_bytes() + (c / 32) * 16 + c % 16)];
  return int(c % 32 < 16 ? b & 0x0f : b >> 4) - 8;
}
void q4_gemv_avx2(const Q4Args&, int64_t, int64_t);

}  // namespace sparq
