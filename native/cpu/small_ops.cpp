// small_ops.cpp - drivers of the decoder's small ops: split rows (or elements)
// over the pool and call the table's kernel; RoPE builds its cos/sin table in
// f64 once per call and rotates with plain loops the compiler vectorizes.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

namespace {

// Runs fn(r0, r1) over [0, count) in chunks of about `grain` units.
template <class F>
void chunked(int64_t count, int64_t grain, F fn) {
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>((count + grain - 1) / grain, num_threads() * 4));
  const int64_t per = (count + tasks - 1) / tasks;
  parallel_for(tasks, [&](int64_t t) {
    const int64_t a = t * per, b = std::min(count, a + per);
    if (a < b) fn(a, b);
  });
}

constexpr int64_t kGrainElems = 1 << 15;

}  // namespace

Error rmsnorm(const float* x, const float* w, int64_t rows, int64_t d, float eps, float* y) {
  const KernelTable t = kernels();
  chunked(rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(d, 1)),
          [&](int64_t a, int64_t b) { t.rmsnorm(x, w, y, d, eps, a, b); });
  return Error{};
}

Error softmax(const float* x, int64_t rows, int64_t n, float* y) {
  const KernelTable t = kernels();
  chunked(rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(n, 1)),
          [&](int64_t a, int64_t b) { t.softmax(x, y, n, a, b); });
  return Error{};
}

Error swiglu(const float* a, const float* b, int64_t n, float* y) {
  const KernelTable t = kernels();
  chunked(n, kGrainElems, [&](int64_t i0, int64_t i1) { t.swiglu(a, b, y, i0, i1); });
  return Error{};
}

Error swiglu_rows(const float* gu, int64_t rows, int64_t h, float* y) {
  const KernelTable t = kernels();
  chunked(rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(h, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) t.swiglu(gu + r * 2 * h, gu + r * 2 * h + h, y + r * h, 0, h);
  });
  return Error{};
}

int64_t argmax_f32(const float* x, int64_t n) { return n < 1 ? 0 : kernels().argmax(x, n); }

Error add(const float* a, const float* b, int64_t n, float* y) {
  const KernelTable t = kernels();
  chunked(n, kGrainElems, [&](int64_t i0, int64_t i1) { t.add(a, b, y, i0, i1); });
  return Error{};
}

Error rope_table(int64_t t, int64_t d, int64_t pos0, float theta, const float* freq_factors, float* cs, float* sn) {
  if (!(theta > 0.f)) return Error::make(Status::invalid_argument, "rope: theta must be positive");
  const int64_t half = d / 2;
  std::vector<double> freq;
  try {
    freq.resize(size_t(half));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "rope: out of memory");
  }
  for (int64_t i = 0; i < half; ++i) {
    freq[size_t(i)] = std::pow(double(theta), -2.0 * double(i) / double(d));
    if (freq_factors) {
      if (!(freq_factors[i] > 0.f) || !std::isfinite(freq_factors[i])) return Error::make(Status::invalid_argument, "rope: frequency factors must be finite and > 0");
      freq[size_t(i)] /= double(freq_factors[i]);
    }
  }
  chunked(t, std::max<int64_t>(1, 4096 / std::max<int64_t>(half, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti)
      for (int64_t i = 0; i < half; ++i) {
        const double ang = double(pos0 + ti) * freq[size_t(i)];
        cs[size_t(ti * half + i)] = float(std::cos(ang));
        sn[size_t(ti * half + i)] = float(std::sin(ang));
      }
  });
  return Error{};
}

void rope_apply(const float* x, int64_t bh, int64_t t, int64_t d, bool neox, const float* cs, const float* sn, float* y) {
  const int64_t half = d / 2;
  chunked(bh * t, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      const float* c = cs + (r % t) * half;
      const float* s = sn + (r % t) * half;
      if (neox) {
        for (int64_t i = 0; i < half; ++i) {
          const float a = xr[i], b = xr[i + half];
          yr[i] = a * c[i] - b * s[i];
          yr[i + half] = a * s[i] + b * c[i];
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float a = xr[2 * i], b = xr[2 * i + 1];
          yr[2 * i] = a * c[i] - b * s[i];
          yr[2 * i + 1] = a * s[i] + b * c[i];
        }
      }
      if (d % 2) yr[d - 1] = xr[d - 1];
    }
  });
}

Error rope(const float* x, int64_t bh, int64_t t, int64_t d, int64_t pos0, float theta, bool neox, float* y,
           const float* freq_factors) {
  std::vector<float> cs, sn;
  try {
    cs.resize(size_t(t * (d / 2)));
    sn.resize(size_t(t * (d / 2)));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "rope: out of memory");
  }
  const Error e = rope_table(t, d, pos0, theta, freq_factors, cs.data(), sn.data());
  if (!e.ok()) return e;
  rope_apply(x, bh, t, d, neox, cs.data(), sn.data(), y);
  return Error{};
}

}  // namespace sparq
