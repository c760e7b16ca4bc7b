// q4.cpp - 4-bit weights: packing, round-to-nearest quantization and the
// driver (the scalar reference GEMV: ref/q4_ref.cpp) (m <= 8: the GEMV kernel over rows of W;
// larger m: W expanded to int8 with the same groups and run through the
// dense int8 GEMM).
#include "q4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "dispatch.h"
#include "thread_pool.h"

namespace sparq {

namespace {

Error bad(const std::string& m) { return Error::make(Status::invalid_argument, "int4: " + m); }

Error check(int64_t n, int64_t k, int64_t group) {
  if (n < 1 || k < 1 || n > (int64_t(1) << 31) || k > (int64_t(1) << 20)) return bad("bad shape");
  if (group != 32 && group != 64 && group != 128) return bad("group must be 32, 64 or 128; got " + std::to_string(group));
  return Error{};
}

std::unique_ptr<PackedQ4> make(int64_t n, int64_t k, int64_t group) {
  auto p = std::make_unique<PackedQ4>();
  p->n = n;
  p->k = k;
  p->k_pad = (k + 31) / 32 * 32;
  p->group = group;
  p->groups = (k + group - 1) / group;
  p->data.assign(size_t(n * p->row_bytes() + 32), 0x88);
  p->scale.assign(size_t(n * p->groups), 0.f);
  return p;
}

inline void put(PackedQ4& p, int64_t j, int64_t c, int v) {
  uint8_t& b = p.data[size_t(j * p.row_bytes() + (c / 32) * 16 + c % 16)];
  const uint8_t nib = uint8_t(v + 8);
  b = c % 32 < 16 ? uint8_t((b & 0xf0) | nib) : uint8_t((b & 0x0f) | nib << 4);
}


}  // namespace

Error q4_pack(const int8_t* q, const float* scales, int64_t n, int64_t k, int64_t group, std::unique_ptr<PackedQ4>* out) {
  if (Error e = check(n, k, group); !e.ok()) return e;
  try {
    auto p = make(n, k, group);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < k; ++c) {
        const int v = q[j * k + c];
        if (v < -7 || v > 7) return bad("values must be in [-7, 7]");
        put(*p, j, c, v);
      }
    std::copy(scales, scales + n * p->groups, p->scale.begin());
    for (float sc : p->scale)
      if (!(std::isfinite(sc) && sc >= 0.f)) return bad("group scales must be finite and >= 0");
    *out = std::move(p);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "int4: out of memory");
  }
  return Error{};
}

Error q4_from_nibbles(const uint8_t* nib, const float* scales, int64_t n, int64_t k, int64_t group, std::unique_ptr<PackedQ4>* out) {
  if (Error e = check(n, k, group); !e.ok()) return e;
  try {
    auto p = make(n, k, group);
    const int64_t bytes = n * p->row_bytes();
    std::copy(nib, nib + bytes, p->data.begin());  // checked after the copy: the source may change
    for (int64_t i = 0; i < bytes; ++i)
      if (!(p->data[size_t(i)] & 0x0f) || !(p->data[size_t(i)] & 0xf0)) return bad("a 4-bit value is -8 (outside [-7, 7])");
    std::copy(scales, scales + n * p->groups, p->scale.begin());
    for (float sc : p->scale)
      if (!(std::isfinite(sc) && sc >= 0.f)) return bad("group scales must be finite and >= 0");
    *out = std::move(p);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "int4: out of memory");
  }
  return Error{};
}

Error q4_quantize(const float* w, int64_t n, int64_t k, int64_t group, std::unique_ptr<PackedQ4>* out) {
  if (Error e = check(n, k, group); !e.ok()) return e;
  try {
    auto p = make(n, k, group);
    parallel_for(n, [&](int64_t j) {
      for (int64_t g = 0; g < p->groups; ++g) {
        const int64_t c0 = g * group, c1 = std::min(k, c0 + group);
        float mx = 0.f;
        for (int64_t c = c0; c < c1; ++c) mx = std::max(mx, std::fabs(w[j * k + c]));
        const float sc = mx > 0.f ? mx / 7.f : 1.f, inv = 1.f / sc;
        p->scale[size_t(j * p->groups + g)] = sc;
        for (int64_t c = c0; c < c1; ++c) {
          const float r = std::nearbyint(w[j * k + c] * inv);
          put(*p, j, c, int(r > 7.f ? 7.f : r < -7.f ? -7.f : r == r ? r : 0.f));
        }
      }
    });
    *out = std::move(p);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "int4: out of memory");
  }
  return Error{};
}

void q4_row(const PackedQ4& p, int64_t j, int8_t* out) {
  // a block of 16 bytes holds values [0, 16) in its low nibbles and [16, 32) in its high ones;
  // eight nibbles at a time in a uint64: (v + 0x78) ^ 0x80 is v - 8 as int8 (no carry between bytes)
  constexpr uint64_t lo4 = 0x0f0f0f0f0f0f0f0full, bias = 0x7878787878787878ull, sign = 0x8080808080808080ull;
  const uint8_t* row = p.data.data() + j * p.row_bytes();
  for (int64_t b = 0; b < p.k_pad / 32; ++b, row += 16, out += 32)
    for (int h = 0; h < 2; ++h) {
      uint64_t v;
      std::memcpy(&v, row + 8 * h, 8);
      const uint64_t lo = ((v & lo4) + bias) ^ sign, hi = (((v >> 4) & lo4) + bias) ^ sign;
      std::memcpy(out + 8 * h, &lo, 8);
      std::memcpy(out + 16 + 8 * h, &hi, 8);
    }
}

void q4_unpack(const PackedQ4& p, int8_t* q) {
  parallel_for((p.n + 15) / 16, [&](int64_t t) {
    std::vector<int8_t> row(static_cast<size_t>(p.k_pad));
    for (int64_t j = t * 16; j < std::min(p.n, t * 16 + 16); ++j) {
      q4_row(p, j, row.data());
      std::copy(row.begin(), row.begin() + p.k, q + j * p.k);
    }
  });
}

Error linear_q4(const PackedQ4& w, const float* x, int64_t m, float* y) {
  if (m < 1) return bad("m must be at least 1");
  const KernelTable t = kernels();
  const int64_t ldq = (w.k_pad + 63) / 64 * 64;
  try {
    if (m >= kQ4DenseM) {
      // prefill: W expanded to int8 a strip at a time, with the same groups, through the dense int8 GEMM
      return linear_s8_expanded(w.n, w.k, w.group, [&](int64_t j, int8_t* row, float* scales) {
        q4_row(w, j, row);
        std::copy_n(w.scale.data() + j * w.groups, w.groups, scales);
      }, x, m, nullptr, y, -8, 7);  // 4-bit values
    }
    // decode: this thread's scratch, reused (one call per linear per token)
    thread_local std::vector<int8_t> xq;
    thread_local std::vector<float> xs;
    thread_local std::vector<int32_t> xsum;
    if (int64_t(xq.size()) < m * ldq) xq.resize(size_t(m * ldq));
    if (int64_t(xs.size()) < m) xs.resize(size_t(m));
    if (int64_t(xsum.size()) < m * w.groups) xsum.resize(size_t(m * w.groups));
    quantize_activations(t, x, m, w.k, ldq, false, xq.data(), xs.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t g = 0; g < w.groups; ++g) {
        const int8_t* q = xq.data() + i * ldq + g * w.group;
        int32_t sum = 0;
        for (int64_t c = 0; c < std::min(w.group, w.k - g * w.group); ++c) sum += q[c];
        xsum[size_t(i * w.groups + g)] = sum;
      }
    // rows of W per task: about 32K weights, at least 4 tasks per thread
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>((int64_t(1) << 15) / w.k_pad + 1, (w.n + 4 * num_threads() - 1) / (4 * num_threads())));
    for (int64_t i0 = 0; i0 < m; i0 += 8) {
      Q4Args a;
      a.w = &w;
      a.xq = xq.data() + i0 * ldq;
      a.ldq = ldq;
      a.xs = xs.data() + i0;
      a.xsum = xsum.data() + i0 * w.groups;
      a.m = std::min<int64_t>(8, m - i0);
      a.y = y + i0 * w.n;
      parallel_for((w.n + rows - 1) / rows, [&](int64_t r) { t.q4_gemv(a, r * rows, std::min(w.n, r * rows + rows)); });
    }
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "int4: out of memory");
  }
  return Error{};
}

}  // namespace sparq
