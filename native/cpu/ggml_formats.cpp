// ggml_formats.cpp - GGUF tensor encodings sparq reads directly: Q8_0 blocks
// (an f16 scale + 32 int8 values) pack straight into the int8 group-32 layout
// (no f32 round trip), and Q8_0 / F16 rows widen to f32 where f32 is needed
// (token embeddings, f32 weights).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <functional>
#include <vector>

#include "half.h"
#include "kernels.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

namespace {
constexpr int64_t kQ8Block = 34;  // bytes: f16 scale + 32 x int8
}

Error pack_q8_0_stream(int64_t n, int64_t k, const std::function<Error(uint8_t* blocks, int64_t r0, int64_t r1)>& fill,
                       std::unique_ptr<PackedWeight>* out) {
  if (n < 1 || k < 1 || k % 32) return Error::make(Status::invalid_argument, "pack_q8_0: k must be a positive multiple of 32");
  const int64_t g = k / 32, row_bytes = g * kQ8Block;
  std::unique_ptr<PackedWeight> pw;
  if (Error e = PackedWeight::create(n, k, 32, true, false, &pw); !e.ok()) return e;
  const int64_t chunk = std::max<int64_t>(64, (int64_t(4) << 20) / row_bytes);
  std::vector<uint8_t> blocks;
  std::vector<int8_t> values;
  std::vector<float> scales;
  try {
    const int64_t rows = std::min(chunk, n);
    blocks.resize(size_t(rows * row_bytes));
    values.resize(size_t(rows * k));
    scales.resize(size_t(rows * g));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "pack_q8_0: out of memory");
  }
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t r1 = std::min(n, r0 + chunk);
    if (Error e = fill(blocks.data(), r0, r1); !e.ok()) return e;
    for (int64_t r = 0; r < r1 - r0; ++r)
      for (int64_t b = 0; b < g; ++b) {
        const uint8_t* blk = blocks.data() + (r * g + b) * kQ8Block;
        uint16_t h;
        std::memcpy(&h, blk, 2);
        scales[size_t(r * g + b)] = half_to_float(h);
        if (!std::isfinite(scales[size_t(r * g + b)]))
          return Error::make(Status::invalid_argument, "Q8_0: the scale of block " + std::to_string(b) + " of row " +
                                                           std::to_string(r0 + r) + " is not finite (damaged file)");
        std::memcpy(values.data() + r * k + b * 32, blk + 2, 32);
      }
    pack_s8_rows(pw->p_, r0, r1, values.data(), scales.data());
  }
  *out = std::move(pw);
  return Error{};
}

Error widen_to_f32(const void* src, int type, int64_t count, float* out) {
  if (type == 1) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    parallel_for(64, [&](int64_t t) {
      for (int64_t i = count * t / 64; i < count * (t + 1) / 64; ++i) out[i] = half_to_float(s[i]);
    });
    return Error{};
  }
  if (type == 30) {  // bf16: the high half of an f32
    const uint16_t* s = static_cast<const uint16_t*>(src);
    parallel_for(64, [&](int64_t t) {
      for (int64_t i = count * t / 64; i < count * (t + 1) / 64; ++i) {
        const uint32_t bits = uint32_t(s[i]) << 16;
        std::memcpy(out + i, &bits, 4);
      }
    });
    return Error{};
  }
  if (type == 8) {
    if (count % 32) return Error::make(Status::invalid_argument, "widen_to_f32: Q8_0 needs a multiple of 32 values");
    const int64_t blocks = count / 32;
    const uint8_t* s = static_cast<const uint8_t*>(src);
    parallel_for(64, [&](int64_t t) {
      for (int64_t b = blocks * t / 64; b < blocks * (t + 1) / 64; ++b) {
        uint16_t h;
        std::memcpy(&h, s + b * kQ8Block, 2);
        const float d = half_to_float(h);
        const int8_t* q = reinterpret_cast<const int8_t*>(s + b * kQ8Block + 2);
        for (int i = 0; i < 32; ++i) out[b * 32 + i] = d * float(q[i]);
      }
    });
    return Error{};
  }
  return Error::make(Status::invalid_argument, "widen_to_f32: unsupported type " + std::to_string(type));
}

}  // namespace sparq
