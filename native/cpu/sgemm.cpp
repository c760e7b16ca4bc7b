// sgemm.cpp - f32 GEMM drivers: matmul (B given [k, n]) and linear (W given
// [n, k], nn.Linear layout). B is packed into 16-column panels per call; small
// m (decode) reads W rows directly with the row-dot kernel instead.
#include <algorithm>
#include <cstring>

#include "dispatch.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

namespace {

struct Panels {
  float* p = nullptr;
  ~Panels() { aligned_free(p); }
};

constexpr int64_t kRowDotMaxM = 8;

}  // namespace

void run_sgemm(SgemmFn fn, const SgemmArgs& args) {
  const int64_t nblocks = (args.n + 15) / 16;
  const int64_t mc = 96, nc = 8;
  const int64_t mt = (args.m + mc - 1) / mc, nt = (nblocks + nc - 1) / nc;
  parallel_for(mt * nt, [&](int64_t t) {
    const int64_t im = t % mt, in = t / mt;
    fn(args, im * mc, std::min(args.m, im * mc + mc), in * nc, std::min(nblocks, in * nc + nc));
  });
}

Error matmul_f32(const float* a, int64_t m, int64_t k, const float* b, int64_t n, const float* bias, float* c) {
  const KernelTable t = kernels();
  const int64_t nblocks = (n + 15) / 16;
  Panels bp;
  bp.p = static_cast<float*>(aligned_malloc(size_t(nblocks * k * 16) * 4));
  if (!bp.p) return Error::make(Status::out_of_memory, "matmul: out of memory packing B");
  parallel_for(nblocks, [&](int64_t nb) {
    float* dst = bp.p + nb * k * 16;
    const int64_t j0 = nb * 16, w = std::min<int64_t>(16, n - j0);
    for (int64_t q = 0; q < k; ++q) {
      std::memcpy(dst + q * 16, b + q * n + j0, size_t(w) * 4);
      for (int64_t jj = w; jj < 16; ++jj) dst[q * 16 + jj] = 0.f;
    }
  });
  SgemmArgs args;
  args.a = a; args.lda = k; args.bp = bp.p; args.m = m; args.n = n; args.k = k;
  args.bias = bias; args.c = c; args.ldc = n;
  run_sgemm(t.sgemm, args);
  return Error{};
}

// x^T (m x k) as 16-column panels: the B operand of the transposed product.
static void pack_xt(const float* x, int64_t m, int64_t k, float* xp) {
  parallel_for((m + 15) / 16, [&](int64_t mb) {
    float* dst = xp + mb * k * 16;
    const int64_t i0 = mb * 16, rows = std::min<int64_t>(16, m - i0);
    for (int64_t q = 0; q < k; ++q) {
      for (int64_t ii = 0; ii < rows; ++ii) dst[q * 16 + ii] = x[(i0 + ii) * k + q];
      for (int64_t ii = rows; ii < 16; ++ii) dst[q * 16 + ii] = 0.f;
    }
  });
}

Error linear_f32(const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* y) {
  const KernelTable t = kernels();
  if (m <= kRowDotMaxM) {
    SgemvArgs args;
    args.x = x; args.ldx = k; args.w = w; args.ldw = k; args.m = m; args.n = n; args.k = k;
    args.bias = bias; args.c = y; args.ldc = n;
    // at least ~32K multiply-adds per task (tiny GEMVs stay on the calling thread)
    const int64_t min_rows = ((int64_t(1) << 15) / std::max<int64_t>(1, m * k) + 3) / 4 * 4;
    const int64_t per = std::max<int64_t>({4, min_rows, n / (num_threads() * 8) / 4 * 4});
    parallel_for((n + per - 1) / per, [&](int64_t tt) { t.sgemv(args, tt * per, std::min(n, tt * per + per)); });
    return Error{};
  }
  // y^T[n, m] = W[n, k] . x^T: W is used in place as the row-major A operand and
  // only x^T (m x k, small next to W) is packed into 16-column panels; the
  // transposed result is written back with the bias. Extra work is O(m (n + k)).
  const int64_t mblocks = (m + 15) / 16;
  Panels xp, yt;
  xp.p = static_cast<float*>(aligned_malloc(size_t(mblocks * k * 16) * 4));
  yt.p = static_cast<float*>(aligned_malloc(size_t(n * m) * 4));
  if (!xp.p || !yt.p) return Error::make(Status::out_of_memory, "linear: out of memory");
  pack_xt(x, m, k, xp.p);
  SgemmArgs args;
  args.a = w; args.lda = k; args.bp = xp.p; args.m = n; args.n = m; args.k = k;
  args.c = yt.p; args.ldc = m;
  run_sgemm(t.sgemm, args);
  parallel_for((m + 15) / 16, [&](int64_t tt) {
    for (int64_t i = tt * 16; i < std::min(m, tt * 16 + 16); ++i)
      for (int64_t j = 0; j < n; ++j) y[i * n + j] = yt.p[j * m + i] + (bias ? bias[j] : 0.f);
  });
  return Error{};
}

}  // namespace sparq
