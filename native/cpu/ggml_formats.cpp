// ggml_formats.cpp - GGUF tensor encodings sparq reads directly: Q8_0 blocks
// (an f16 scale + 32 int8 values) pack straight into the int8 group-32 layout
// (no f32 round trip), and every GGUF type widens to f32 where f32 is needed
// (token embeddings, f32 weights) through the block-format table (quants.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <functional>
#include <vector>

#include "half.h"
#include "kernels.h"
#include "quants.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

namespace {
constexpr int64_t kQ8Block = kQ8_0Bytes;  // bytes: f16 scale + 32 x int8
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

Error widen_to_f32(const void* src, int type, int64_t count, float* out) { return ggml_to_f32(src, type, count, out); }

}  // namespace sparq
