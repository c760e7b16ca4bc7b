// gptq.cpp - GPTQ (Frantar et al., 2022): quantize W [n, k] column by column,
// pushing each column's rounding error onto the columns not yet quantized
// through the inverse Hessian H^-1 of the layer's inputs (H = X^T X over
// calibration tokens), so that ||W X - Q X|| grows as little as possible.
// Rows are independent given H^-1: they run in parallel.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gptq.h"
#include "thread_pool.h"

namespace sparq {

namespace {

// In-place Cholesky A = L L^T (lower, row-major k x k); false if not positive definite.
bool cholesky(std::vector<double>& a, int64_t k) {
  for (int64_t j = 0; j < k; ++j) {
    double d = a[size_t(j * k + j)];
    for (int64_t p = 0; p < j; ++p) d -= a[size_t(j * k + p)] * a[size_t(j * k + p)];
    if (!(d > 0)) return false;
    const double l = std::sqrt(d);
    a[size_t(j * k + j)] = l;
    for (int64_t i = j + 1; i < k; ++i) {
      double s = a[size_t(i * k + j)];
      for (int64_t p = 0; p < j; ++p) s -= a[size_t(i * k + p)] * a[size_t(j * k + p)];
      a[size_t(i * k + j)] = s / l;
    }
  }
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) a[size_t(i * k + j)] = 0;
  return true;
}

// Inverse of L L^T from L (lower): inv = L^-T L^-1.
std::vector<double> chol_inverse(const std::vector<double>& l, int64_t k) {
  std::vector<double> li(size_t(k * k), 0.0);  // L^-1 (lower)
  for (int64_t c = 0; c < k; ++c) {
    li[size_t(c * k + c)] = 1.0 / l[size_t(c * k + c)];
    for (int64_t i = c + 1; i < k; ++i) {
      double s = 0;
      for (int64_t p = c; p < i; ++p) s += l[size_t(i * k + p)] * li[size_t(p * k + c)];
      li[size_t(i * k + c)] = -s / l[size_t(i * k + i)];
    }
  }
  std::vector<double> inv(size_t(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t p = i; p < k; ++p) s += li[size_t(p * k + i)] * li[size_t(p * k + j)];
      inv[size_t(i * k + j)] = inv[size_t(j * k + i)] = s;
    }
  return inv;
}

inline int qround(double v, double inv, int lim) {
  const double r = std::nearbyint(v * inv);
  return int(std::max<double>(-lim, std::min<double>(lim, r)));
}

}  // namespace

Error gptq_quantize(const float* w, int64_t n, int64_t k, const double* h_in, const GptqOptions& o, int8_t* q, float* scales,
                    GptqStats* stats) {
  if (n < 1 || k < 1) return Error::make(Status::invalid_argument, "gptq: empty weight");
  if (o.bits != 8 && o.bits != 4) return Error::make(Status::invalid_argument, "gptq: bits must be 8 or 4");
  if (o.group < 0 || (o.group && o.group % 4)) return Error::make(Status::invalid_argument, "gptq: group must be 0 or a multiple of 4");
  if (!(o.dampening >= 0) || !(o.dampening < 1)) return Error::make(Status::invalid_argument, "gptq: dampening must be in [0, 1)");
  const int lim = o.bits == 8 ? 127 : 7;
  const int64_t group = o.group && o.group < k ? o.group : k, groups = (k + group - 1) / group;
  std::vector<double> h;
  std::vector<double> u;  // upper Cholesky factor of H^-1: H^-1 = U^T U
  try {
    h.assign(h_in, h_in + k * k);
    // dead inputs (never active): their weights do not matter; keep H invertible
    std::vector<bool> dead(size_t(k), false);
    double mean = 0;
    for (int64_t i = 0; i < k; ++i) {
      if (!(h[size_t(i * k + i)] > 0)) {
        dead[size_t(i)] = true;
        h[size_t(i * k + i)] = 1;
      }
      mean += h[size_t(i * k + i)];
    }
    mean /= double(k);
    const double damp = o.dampening * mean;
    std::vector<double> hinv;
    for (int attempt = 0;; ++attempt) {
      std::vector<double> a = h;
      for (int64_t i = 0; i < k; ++i) a[size_t(i * k + i)] += damp * std::pow(10.0, attempt);
      if (cholesky(a, k)) {
        hinv = chol_inverse(a, k);
        break;
      }
      if (attempt == 6) return Error::make(Status::invalid_argument, "gptq: the Hessian is not positive definite even with dampening");
    }
    // U with H^-1 = U^T U: the lower Cholesky factor of H^-1, transposed
    if (!cholesky(hinv, k)) return Error::make(Status::internal, "gptq: H^-1 is not positive definite");
    u.assign(size_t(k * k), 0.0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j <= i; ++j) u[size_t(j * k + i)] = hinv[size_t(i * k + j)];
    std::vector<double> err_g(size_t(n), 0.0), err_r(size_t(n), 0.0);
    parallel_for(n, [&](int64_t r) {
      std::vector<double> row(w + r * k, w + r * k + k);
      for (int64_t c = 0; c < k; ++c)
        if (dead[size_t(c)]) row[size_t(c)] = 0;
      std::vector<double> e(static_cast<size_t>(k));  // Q - W, for the error measure
      double sc = 0, inv = 0;
      for (int64_t c = 0; c < k; ++c) {
        if (c % group == 0) {
          // the group's scale from its (already updated) weights
          double mx = 0;
          for (int64_t t = c; t < std::min(k, c + group); ++t) mx = std::max(mx, std::fabs(row[size_t(t)]));
          sc = mx > 0 ? mx / lim : 1.0;
          inv = 1.0 / sc;
          scales[r * groups + c / group] = float(sc);
        }
        const int qi = qround(row[size_t(c)], inv, lim);
        q[r * k + c] = int8_t(qi);
        const double d = u[size_t(c * k + c)], err = (row[size_t(c)] - qi * sc) / d;
        for (int64_t t = c + 1; t < k; ++t) row[size_t(t)] -= err * u[size_t(c * k + t)];
      }
      if (stats) {
        // tr((Q - W) H (Q - W)^T) for this row, GPTQ and round-to-nearest with the same group layout
        auto measure = [&](const std::vector<double>& dw) {
          double s = 0;
          for (int64_t a = 0; a < k; ++a) {
            if (dw[size_t(a)] == 0) continue;
            double t = 0;
            for (int64_t b = 0; b < k; ++b) t += h_in[a * k + b] * dw[size_t(b)];
            s += dw[size_t(a)] * t;
          }
          return s;
        };
        for (int64_t c = 0; c < k; ++c) e[size_t(c)] = double(q[r * k + c]) * scales[r * groups + c / group] - w[r * k + c];
        err_g[size_t(r)] = measure(e);
        for (int64_t g = 0; g < groups; ++g) {
          double mx = 0;
          for (int64_t c = g * group; c < std::min(k, g * group + group); ++c) mx = std::max(mx, std::fabs(double(w[r * k + c])));
          const double s = mx > 0 ? mx / lim : 1.0;
          for (int64_t c = g * group; c < std::min(k, g * group + group); ++c) e[size_t(c)] = qround(w[r * k + c], 1.0 / s, lim) * s - w[r * k + c];
        }
        err_r[size_t(r)] = measure(e);
      }
    });
    if (stats) {
      stats->error = 0;
      stats->rtn_error = 0;
      for (int64_t r = 0; r < n; ++r) {
        stats->error += err_g[size_t(r)];
        stats->rtn_error += err_r[size_t(r)];
      }
    }
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "gptq: out of memory");
  }
  return Error{};
}

}  // namespace sparq
