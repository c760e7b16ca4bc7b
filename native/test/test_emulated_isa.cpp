// test_emulated_isa.cpp - runs the AVX-VNNI, AVX-512 VNNI and AMX int8 kernels
// with their intrinsics emulated in plain C++ (emu/*.h, force-included into
// emu/gemm_s8_*_emu.cpp), against gemm_s8_ref, on any x86-64 CPU with AVX2.
// This checks the kernels' logic - packed-layout indexing, row/column tails,
// masks, groups, u8 compensation, AMX tile shapes and configuration - where
// the real instructions are missing; test_kernels --isa X checks the real
// instructions on CPUs that have them.
//   test_emulated_isa [iterations] [seed]     (seed: random by default, printed)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include "../cpu/half.h"
#include "../cpu/kernels.h"
#include "emu/emu_avx512_amx.h"
using namespace sparq;

static std::mt19937_64 rng;
static int irand(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

struct Packed {
  PackedS8 p;
  std::vector<int8_t> data; std::vector<int32_t> colsum; std::vector<float> scales;
};
// group_req == 0: per-channel
static void pack(Packed& P, const std::vector<int8_t>& B, int64_t n, int64_t k, int64_t group_req, bool with_scales) {
  PackedS8& p = P.p;
  p.n = n; p.k = k; p.n_pad = round_up(n, 16);
  // exactly as PackedWeight::create (native/cpu/gemm_s8.cpp)
  p.k_pad = round_up(k, std::max<int64_t>(64, group_req));
  if (group_req == 0 || group_req >= k) { p.group = p.k_pad; p.groups = 1; }
  else { p.group = group_req; p.groups = (k + group_req - 1) / group_req; }
  P.data.assign(p.n_pad * p.k_pad, 0);
  for (int64_t j = 0; j < n; ++j) for (int64_t q = 0; q < k; ++q) {
    int64_t nb = j / 16, jj = j % 16;
    P.data[((nb * (p.k_pad / 4)) + q / 4) * 64 + jj * 4 + q % 4] = B[j * k + q];
  }
  P.colsum.assign(p.n_pad / 16 * p.groups * 16, 0);
  P.scales.assign(p.n_pad / 16 * p.groups * 16, 0.f);
  for (int64_t j = 0; j < p.n_pad; ++j) for (int64_t g = 0; g < p.groups; ++g) {
    int64_t s = 0;
    if (j < n) for (int64_t q = g * p.group; q < std::min(k, (g + 1) * p.group); ++q) s += B[j * k + q];
    P.colsum[s8_group_index(j / 16, g, p.groups) + j % 16] = int32_t(s);
    P.scales[s8_group_index(j / 16, g, p.groups) + j % 16] = j < n ? std::uniform_real_distribution<float>(0.001f, 0.02f)(rng) : 0.f;
  }
  p.data = P.data.data(); p.colsum = P.colsum.data(); p.scales = with_scales ? P.scales.data() : nullptr;
}

static int fails = 0, runs = 0;
enum Kind { VNNI256, VNNI512, AMX };
static const char* kname[] = {"avxvnni", "avx512vnni", "amx"};

static void one(Kind kind, int64_t m, int64_t n, int64_t k, int64_t group_req, bool exact, bool bias, bool subrange) {
  std::vector<int8_t> B(n * k);
  for (auto& v : B) v = int8_t(irand(-128, 127));
  Packed P; pack(P, B, n, k, group_req, !exact);
  const PackedS8& b = P.p;
  const int64_t lda = b.k_pad + 4 * irand(0, 1) * irand(0, 20);
  const int64_t ldc = n + irand(0, 3);
  // A int8 with zeros for k >= b.k; the u8 kernels get +128
  std::vector<uint8_t> A8(m * lda), Au(m * lda);
  for (int64_t i = 0; i < m; ++i) for (int64_t q = 0; q < lda; ++q) {
    int v = q < k ? irand(-128, 127) : 0;
    if (q >= b.k_pad) v = irand(-128, 127);  // garbage beyond k_pad must be ignored
    A8[i * lda + q] = uint8_t(int8_t(v));
    Au[i * lda + q] = uint8_t(v + 128);
  }
  std::vector<float> as(m), bi(n);
  for (auto& v : as) v = std::uniform_real_distribution<float>(0.5f, 2.f)(rng);
  for (auto& v : bi) v = std::uniform_real_distribution<float>(-1.f, 1.f)(rng);
  const int64_t nblk = b.n_pad / 16;
  int64_t m0 = 0, m1 = m, nb0 = 0, nb1 = nblk;
  if (subrange) { m0 = irand(0, int(m)); m1 = irand(int(m0), int(m)); nb0 = irand(0, int(nblk)); nb1 = irand(int(nb0), int(nblk)); }
  GemmS8Args ar; ar.lda = lda; ar.m = m; ar.b = &b; ar.a_scale = as.data(); ar.bias = bias ? bi.data() : nullptr; ar.ldc = ldc;
  std::vector<float> cr(m * ldc, NAN), ck(m * ldc, NAN);
  std::vector<int32_t> ir(m * ldc, 0x7eadbeef), ik(m * ldc, 0x7eadbeef);
  GemmS8Args rr = ar; rr.a = A8.data();
  GemmS8Args kk = ar; kk.a = kind == AMX ? A8.data() : Au.data();
  if (exact) { rr.ci = ir.data(); kk.ci = ik.data(); } else { rr.c = cr.data(); kk.c = ck.data(); }
  gemm_s8_ref(rr, m0, m1, nb0, nb1);
  if (kind == VNNI256) gemm_s8_avxvnni(kk, m0, m1, nb0, nb1);
  else if (kind == VNNI512) gemm_s8_avx512vnni(kk, m0, m1, nb0, nb1);
  else gemm_s8_amx(kk, m0, m1, nb0, nb1);
  ++runs;
  // error bound for f32: a_scale * sum_g |acc_g * s_g| + |bias| (rounding on cancelling groups)
  std::vector<double> bound(m * ldc, 0.0);
  if (!exact)
    for (int64_t i = m0; i < m1; ++i) for (int64_t j = nb0 * 16; j < std::min(n, nb1 * 16); ++j) {
      double t = 0;
      for (int64_t g = 0; g < b.groups; ++g) {
        int64_t acc = 0;
        for (int64_t q = g * b.group; q < std::min(k, (g + 1) * b.group); ++q) acc += int64_t(int8_t(A8[i * lda + q])) * B[j * k + q];
        t += std::fabs(double(acc) * P.scales[s8_group_index(j / 16, g, b.groups) + j % 16]);
      }
      bound[i * ldc + j] = t * as[i] + (bias ? std::fabs(bi[j]) : 0.0);
    }
  int bad = 0;
  for (int64_t i = 0; i < m; ++i) for (int64_t j = 0; j < ldc; ++j) {
    const int64_t x = i * ldc + j;
    if (exact) { if (ir[x] != ik[x]) { if (bad++ < 3) std::printf("  exact mismatch i=%ld j=%ld ref=%d got=%d\n", i, j, ir[x], ik[x]); } }
    else {
      const bool rn = std::isnan(cr[x]), kn = std::isnan(ck[x]);
      if (rn != kn || (!rn && std::fabs(cr[x] - ck[x]) > 4e-7 * (b.groups + 2) * bound[x] + 1e-30)) { if (bad++ < 3) std::printf("  f32 mismatch i=%ld j=%ld ref=%g got=%g\n", i, j, cr[x], ck[x]); }
    }
  }
  if (bad) { ++fails; std::printf("FAIL %s m=%ld n=%ld k=%ld group=%ld exact=%d bias=%d range=[%ld,%ld)x[%ld,%ld) lda=%ld ldc=%ld bad=%d\n", kname[kind], m, n, k, group_req, exact, bias, m0, m1, nb0, nb1, lda, ldc, bad); }
}

// --- f32: sgemm_avx512 / sgemv_avx512 against sgemm_ref / sgemv_ref ---------------
// Per element |got - ref| <= 1e-5 * (sum_p |a * b| + |bias|): f32 accumulation in
// a different order, judged against the magnitude of the terms. accumulate (no
// bias): the GEMM adds to random values already in c.
static void one_f32(int64_t m, int64_t n, int64_t k, bool bias, bool subrange, bool accumulate) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> a(m * k), w(n * k), bi(n);
  for (auto& v : a) v = u(rng);
  for (auto& v : w) v = u(rng);
  for (auto& v : bi) v = u(rng);
  const int64_t nblk = (n + 15) / 16;
  std::vector<float> bp(nblk * k * 16 + 16, 0.f);  // B[p, j] = w[j, p], 16-column panels
  for (int64_t j = 0; j < n; ++j)
    for (int64_t q = 0; q < k; ++q) bp[(j / 16 * k + q) * 16 + j % 16] = w[j * k + q];
  int64_t m0 = 0, m1 = m, nb0 = 0, nb1 = nblk;
  if (subrange) { m0 = irand(0, int(m)); m1 = irand(int(m0), int(m)); nb0 = irand(0, int(nblk)); nb1 = irand(int(nb0), int(nblk)); }
  SgemmArgs g; g.a = a.data(); g.lda = k; g.bp = bp.data(); g.m = m; g.n = n; g.k = k; g.bias = bias ? bi.data() : nullptr; g.ldc = n;
  std::vector<float> c1(m * n, NAN), c2(m * n, NAN);
  if (accumulate) {
    g.bias = nullptr;
    g.accumulate = true;
    for (auto& v : c1) v = u(rng);
    c2 = c1;
  }
  g.c = c1.data(); sgemm_ref(g, m0, m1, nb0, nb1);
  g.c = c2.data(); sgemm_avx512(g, m0, m1, nb0, nb1);
  SgemvArgs v; v.x = a.data(); v.ldx = k; v.w = w.data(); v.ldw = k; v.m = m; v.n = n; v.k = k; v.bias = g.bias; v.ldc = n;
  std::vector<float> y1(m * n, NAN), y2(m * n, NAN);
  const int64_t n0 = subrange ? irand(0, int(n)) : 0, n1 = subrange ? irand(int(n0), int(n)) : n;
  v.c = y1.data(); sgemv_ref(v, n0, n1);
  v.c = y2.data(); sgemv_avx512(v, n0, n1);
  ++runs;
  int bad = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double mag = bias ? std::fabs(bi[j]) : accumulate ? 1.0 : 0.0;
      for (int64_t q = 0; q < k; ++q) mag += std::fabs(double(a[i * k + q]) * w[j * k + q]);
      const double tol = 1e-5 * mag + 1e-30;
      for (auto* pr : {&c1, &y1}) {
        const float r = (*pr)[i * n + j], x = (pr == &c1 ? c2 : y2)[i * n + j];
        if (std::isnan(r) != std::isnan(x) || (!std::isnan(r) && std::fabs(double(r) - x) > tol)) ++bad;
      }
    }
  if (bad) { ++fails; std::printf("FAIL sgemm/sgemv_avx512 m=%ld n=%ld k=%ld bias=%d accumulate=%d bad=%d\n", m, n, k, int(bias), int(accumulate), bad); }
}

// --- attention: attn_avx512 (tile shape; fewer rows -> attn_avx2) against attn_ref ---
static void one_attn(int64_t rows, int64_t d, int64_t nk, KvType type, bool causal, bool masked) {
  ++runs;
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> q(size_t(rows * d)), kf(size_t(nk * d)), vf(size_t(nk * d));
  for (auto& x : q) x = nd(rng);
  for (auto& x : kf) x = nd(rng);
  for (auto& x : vf) x = nd(rng);
  // storage of keys / values in `type` (int8: one scale per row)
  std::vector<uint8_t> kb(size_t(nk * d) * 4), vb(size_t(nk * d) * 4);
  std::vector<float> ks(static_cast<size_t>(nk)), vs(static_cast<size_t>(nk));
  auto store = [&](const std::vector<float>& src, std::vector<uint8_t>& dst, std::vector<float>& sc) {
    for (int64_t j = 0; j < nk; ++j) {
      float mx = 0.f;
      for (int64_t i = 0; i < d; ++i) mx = std::max(mx, std::fabs(src[size_t(j * d + i)]));
      sc[size_t(j)] = mx / 127.f;
      for (int64_t i = 0; i < d; ++i) {
        const float x = src[size_t(j * d + i)];
        if (type == KvType::f32) std::memcpy(dst.data() + (j * d + i) * 4, &x, 4);
        else if (type == KvType::f16) { const uint16_t h = float_to_half(x); std::memcpy(dst.data() + (j * d + i) * 2, &h, 2); }
        else dst[size_t(j * d + i)] = uint8_t(int8_t(std::nearbyint(x * 127.f / mx)));
      }
    }
  };
  store(kf, kb, ks);
  store(vf, vb, vs);
  std::vector<const float*> qp(static_cast<size_t>(rows)), mp(static_cast<size_t>(rows));
  std::vector<int64_t> lim(static_cast<size_t>(rows));
  std::vector<float> mask(size_t(rows * nk));
  for (auto& x : mask) x = irand(0, 9) == 0 ? -INFINITY : nd(rng);
  for (int64_t r = 0; r < rows; ++r) {
    qp[size_t(r)] = q.data() + r * d;
    mp[size_t(r)] = mask.data() + r * nk;
    lim[size_t(r)] = causal ? irand(0, int(nk)) : nk;
  }
  if (masked && rows > 2) for (int64_t j = 0; j < nk; ++j) mask[size_t(2 * nk + j)] = -INFINITY;  // a row that sees nothing
  AttnTaskArgs a;
  a.q = qp.data(); a.scale = 1.f / std::sqrt(float(d)); a.rows = rows; a.d = d; a.limit = lim.data();
  a.mask = masked ? mp.data() : nullptr; a.type = type; a.k = kb.data(); a.v = vb.data(); a.k_scale = ks.data(); a.v_scale = vs.data();
  a.j0 = irand(0, int(nk / 3)); a.j1 = nk - irand(0, int(nk / 4));
  std::vector<float> w(size_t(attn_work_floats(rows, d) + 16));
  a.work = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(w.data()) + 63) & ~uintptr_t(63));
  std::vector<float> o1(static_cast<size_t>(rows * d)), m1(static_cast<size_t>(rows)), l1(static_cast<size_t>(rows));
  std::vector<float> o2 = o1, m2 = m1, l2 = l1;
  a.o = o1.data(); a.m = m1.data(); a.l = l1.data();
  attn_ref(a);
  a.o = o2.data(); a.m = m2.data(); a.l = l2.data();
  attn_avx512(a);
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (l1[size_t(r)] == 0.f || l2[size_t(r)] == 0.f) { bad += (l1[size_t(r)] == 0.f) != (l2[size_t(r)] == 0.f); continue; }
    double num = 0, den = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double x = o1[size_t(r * d + i)] / l1[size_t(r)], y = o2[size_t(r * d + i)] / l2[size_t(r)];
      num += (x - y) * (x - y);
      den += x * x;
    }
    // relative to the row's norm, with a floor: a row of d = 1 can average to ~0
    if (!(std::sqrt(num) <= 1e-4 * (std::sqrt(den) + 1e-2 * std::sqrt(double(d))))) ++bad;
  }
  if (bad) { ++fails; std::printf("FAIL attn_avx512 rows=%ld d=%ld nk=%ld type=%d causal=%d mask=%d bad=%d\n", rows, d, nk, int(type), int(causal), int(masked), bad); }
}

// sprow_avx512 (the prefill's row expansion): row j's k values, nothing written past round_up(k, 64)
static int check_sprow(const SparseWeight& s, const int8_t* dense, int64_t ld) {
  const int64_t room = (s.k + 63) / 64 * 64;
  std::vector<int8_t> row(size_t(room + 64));
  int bad = 0;
  for (int64_t j = 0; j < s.n; ++j) {
    std::fill(row.begin(), row.end(), int8_t(0x55));
    sprow_avx512(s, j, row.data());
    for (int64_t c = 0; c < s.k; ++c) bad += row[size_t(c)] != dense[j * ld + c];
    for (int64_t c = room; c < room + 64; ++c) bad += row[size_t(c)] != 0x55;
  }
  return bad;
}

// spmv_avx512 on rows [j0, j1) of s (random) with m random activation rows, against exact
// integer dots with dense (row j at dense + j * ld); plus check_sprow. Mismatches.
static int check_spmv(const SparseWeight& s, int64_t m, const int8_t* dense, int64_t ld) {
  const int64_t n = s.n, k = s.k, ldq = (std::max(s.words() * 32, k + 4) + 63) / 64 * 64;
  std::vector<int8_t> xq(size_t(m * ldq), 0);
  std::vector<float> xs(static_cast<size_t>(m)), bias(static_cast<size_t>(n)), y(static_cast<size_t>(m * n), -1.f);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < k; ++c) xq[size_t(i * ldq + c)] = int8_t(irand(-127, 127));
    xs[size_t(i)] = float(irand(1, 100)) / 128.f;
  }
  for (auto& b : bias) b = float(irand(-50, 50)) / 8.f;
  SpArgs a;
  a.xq = xq.data();
  a.ldq = ldq;
  a.xs = xs.data();
  a.m = m;
  a.bias = irand(0, 1) ? bias.data() : nullptr;
  a.y = y.data();
  const int64_t j0 = irand(0, int(n)), j1 = irand(int(j0), int(n));
  spmv_avx512(s, a, j0, j1);
  int bad = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t acc = 0;
      for (int64_t c = 0; c < k; ++c) acc += int64_t(xq[size_t(i * ldq + c)]) * dense[j * ld + c];
      const float want = j >= j0 && j < j1 ? sparse_q_out(acc, xs[size_t(i)], s.scale[size_t(j)], a.bias, j) : -1.f;
      bad += y[size_t(i * n + j)] != want;
    }
  return bad + check_sprow(s, dense, ld);
}

// --- sparse: spmv_avx512 (int8 bitmask: vpexpandb + vpdpbusd) against exact integer dots ---
static void one_sparse(int64_t m, int64_t n, int64_t k, double density) {
  ++runs;
  SparseWeight s;
  s.format = SparseFormat::bitmask;
  s.n = n;
  s.k = k;
  s.int8 = true;
  s.row_ptr.assign(size_t(n + 1), 0);
  s.mask.assign(size_t(n * s.words()), 0u);
  std::vector<int8_t> dense(size_t(n * k), 0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < k; ++c)
      if (std::uniform_real_distribution<double>(0, 1)(rng) < density) {
        const int8_t v = int8_t(irand(-127, 127));
        dense[size_t(j * k + c)] = v;
        s.vq.push_back(v);
        if (v) s.mask[size_t(j * s.words() + c / 32)] |= 1u << (c % 32);
        else s.vq.pop_back();
      }
    s.row_ptr[size_t(j + 1)] = int64_t(s.vq.size());
    s.scale.push_back(float(irand(1, 100)) / 64.f);
  }
  s.nnz = int64_t(s.vq.size());
  s.vq.resize(s.vq.size() + kSparseI8Pad, 0);
  const int bad = check_spmv(s, m, dense.data(), k);
  if (bad) { ++fails; std::printf("FAIL spmv_avx512 / sprow_avx512 m=%ld n=%ld k=%ld density=%.2f bad=%d\n", m, n, k, density, bad); }
}

// --- sparse: spmv_avx512 (int8 2:4: index nibbles -> masks by vpshufb, vpexpandb + vpdpbusd) ---
static void one_nm24(int64_t m, int64_t n, int64_t k) {
  ++runs;
  // 0, 1 or 2 nonzeros per group of 4 (fewer than 2: padding with explicit zeros, its
  // indices anywhere in the group), a partial last group when k % 4 != 0
  std::vector<float> w(size_t(n * k), 0.f);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c0 = 0; c0 < k; c0 += 4) {
      int pos[4] = {0, 1, 2, 3};
      std::shuffle(pos, pos + 4, rng);
      const int keep = irand(0, 2);
      for (int t = 0; t < keep; ++t)
        if (c0 + pos[t] < k) w[size_t(j * k + c0 + pos[t])] = float(irand(-127, 127)) / 8.f;
    }
  std::unique_ptr<SparseWeight> sp;
  if (Error e = sparse_from_dense(w.data(), n, k, SparseFormat::nm, 2, 4, true, &sp); !e.ok()) {
    ++fails;
    std::printf("FAIL nm24 build: %s\n", e.message.c_str());
    return;
  }
  const SparseWeight& s = *sp;
  std::vector<int8_t> dense(size_t(n * (k + 64)));
  for (int64_t j = 0; j < n; ++j) sparse_row_i8(s, j, dense.data() + j * (k + 64));
  const int bad = check_spmv(s, m, dense.data(), k + 64);
  if (bad) { ++fails; std::printf("FAIL spmv_avx512 / sprow_avx512 2:4 m=%ld n=%ld k=%ld bad=%d\n", m, n, k, bad); }
}

int main(int argc, char** argv) {
  const int64_t ms[] = {1, 2, 3, 5, 6, 7, 8, 9, 12, 13, 15, 16, 17, 24, 31, 32, 33, 40, 47, 48, 50, 64, 65, 100};
  const int64_t ns[] = {1, 15, 16, 17, 31, 33, 48, 50, 64, 80, 100, 130};
  const int64_t ks[] = {1, 20, 63, 64, 65, 70, 128, 200, 256, 300};
  const int64_t gs[] = {0, 32, 64, 128, 16, 256, 48, 96, 100, 20, 12, 160};
  int iters = argc > 1 ? atoi(argv[1]) : 400;
  const unsigned long long seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : std::random_device{}();
  rng.seed(seed);
  std::printf("emulated ISA kernels vs gemm_s8_ref: %d iterations, seed %llu\n", iters, seed);
  for (int it = 0; it < iters; ++it) {
    for (int kind = 0; kind < 3; ++kind) {
      int64_t m = ms[irand(0, 23)], n = ns[irand(0, 11)], k = ks[irand(0, 9)], g = gs[irand(0, 11)];
      bool exact = irand(0, 3) == 0;
      if (exact) { if (g && (k + g - 1) / g > 1) g = 0; }
      one(Kind(kind), m, n, k, g, exact, irand(0, 1), irand(0, 2) == 0);
    }
  }
  // AMX-native shapes: m >= 16, every group kind
  const int64_t ms2[] = {16, 17, 31, 32, 33, 48, 63, 64, 65};
  for (int64_t g : {0, 32, 64, 128, 256, 96, 48})
    for (int64_t m : ms2)
      for (int kind = 0; kind < 3; ++kind) {
        int64_t n = ns[irand(0, 11)], k = ks[irand(4, 9)];
        bool exact = g == 0 && irand(0, 2) == 0;
        one(Kind(kind), m, n, k, g, exact, irand(0, 1), false);
      }
  // big k / multi row block
  for (int kind = 0; kind < 3; ++kind) {
    one(Kind(kind), 300, 40, 4096, 0, false, true, false);
    one(Kind(kind), 300, 40, 4096, 128, false, true, false);
    one(Kind(kind), 270, 20, 4000, 0, true, false, false);
    one(Kind(kind), 70, 50, 4096, 32, false, false, true);
  }
  const int64_t fm[] = {1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 24, 25, 100, 145, 300};
  const int64_t fn[] = {1, 3, 15, 16, 17, 31, 32, 33, 47, 64, 100, 257};
  const int64_t fk[] = {1, 3, 17, 61, 256, 257, 1000};
  for (int it = 0; it < iters / 2; ++it) one_f32(fm[irand(0, 14)], fn[irand(0, 11)], fk[irand(0, 6)], irand(0, 1), irand(0, 2) == 0, irand(0, 3) == 0);
  const int64_t ar[] = {1, 5, 11, 12, 13, 16, 17, 31, 32, 33, 48, 50};
  const int64_t ad[] = {1, 3, 16, 17, 64, 80, 128};
  for (int it = 0; it < iters / 4 + 12; ++it)
    one_attn(ar[irand(0, 11)], ad[irand(0, 6)], irand(1, 300), KvType(irand(0, 2)), irand(0, 1), irand(0, 2) == 0);
  // the decode row path (rows < 12, d a multiple of 16): every row count (its 4 / 2 / 1-row
  // score groups and P.V row groups), d with and without a 16-column tail, 128+ (wide strips)
  const int64_t dr[] = {16, 48, 64, 80, 96, 128, 144, 256};
  for (int64_t rows = 1; rows < 12; ++rows)
    for (int it = 0; it < 4; ++it)
      one_attn(rows, dr[irand(0, 7)], irand(1, 300), KvType(irand(0, 2)), irand(0, 1), irand(0, 2) == 0);
  const int64_t sk[] = {1, 31, 32, 33, 63, 64, 65, 96, 100, 257, 1000};
  const double sd[] = {0.0, 0.1, 0.5, 0.9, 1.0};
  for (int it = 0; it < iters / 2 + 20; ++it) one_sparse(irand(1, 8), irand(1, 20), sk[irand(0, 10)], sd[irand(0, 4)]);
  // 2:4: k past a group of 8 steps (512), partial steps and groups
  const int64_t nk[] = {1, 3, 4, 5, 63, 64, 65, 127, 203, 256, 511, 512, 513, 1000, 1027};
  for (int it = 0; it < iters / 4 + 30; ++it) one_nm24(irand(1, 8), irand(1, 12), nk[irand(0, 14)]);
  std::printf("%d runs, %d failures, tdpbssd %ld, ldtilecfg %ld\n", runs, fails, emu::tdp_count(), emu::cfg_count());
  return fails != 0;
}
