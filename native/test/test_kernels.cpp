// test_kernels.cpp - native tests of every kernel path against independent
// references (plain loops over the unpacked inputs, f64 for float results).
//   test_kernels --isa avx2 [--quick]   run all op checks with the int8/f32 paths of that ISA
//                                       (--quick: without the large shapes; for emulated paths)
//   test_kernels --dispatch     feature detection and SPARQ_ISA parsing
// Exits 77 (ctest: skipped) when the CPU lacks the requested ISA.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../cpu/dispatch.h"
#include "../cpu/kernels.h"
#include "../cpu/quants.h"
#include "../cpu/thread_pool.h"
#include "sparq/sparq.h"

using namespace sparq;

static int g_failures = 0;
static std::mt19937_64 g_rng(std::random_device{}());

#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      ++g_failures;                                               \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
      std::fprintf(stderr, __VA_ARGS__);                          \
      std::fprintf(stderr, "\n");                                 \
    }                                                             \
  } while (0)

static std::vector<int8_t> rand_i8(size_t n, int lo = -128, int hi = 127) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(d(g_rng));
  return v;
}
static std::vector<float> rand_f32(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}
static double rel_err(const float* out, const double* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

struct Shape { int64_t m, n, k; };
static const Shape kShapes[] = {
    {1, 1, 1}, {1, 17, 5}, {2, 31, 61}, {3, 16, 64}, {7, 67, 127}, {8, 64, 129}, {1, 257, 1000},
    {64, 97, 255}, {129, 33, 67}, {5, 1031, 257}, {33, 48, 4099}, {64, 160, 512}, {13, 7, 3},
};

// --- int8 exact matmul -------------------------------------------------------------
static void check_matmul_s8(const Shape& s, int alo, int ahi, int blo, int bhi) {
  auto a = rand_i8(size_t(s.m * s.k), alo, ahi);
  auto b = rand_i8(size_t(s.n * s.k), blo, bhi);
  std::unique_ptr<PackedWeight> pw;
  Error e = pack_s8(b.data(), s.n, s.k, 0, nullptr, nullptr, &pw);
  CHECK(e.ok(), "pack_s8: %s", e.message.c_str());
  if (!e.ok()) return;
  std::vector<int32_t> c(size_t(s.m * s.n), 0x5a5a5a5a);
  e = matmul_s8(a.data(), s.m, s.k, pw->view(), c.data());
  CHECK(e.ok(), "matmul_s8: %s", e.message.c_str());
  int64_t bad = 0;
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      int32_t acc = 0;
      for (int64_t q = 0; q < s.k; ++q) acc += int32_t(a[i * s.k + q]) * int32_t(b[j * s.k + q]);
      bad += acc != c[i * s.n + j];
    }
  CHECK(bad == 0, "matmul_s8 m=%lld n=%lld k=%lld A[%d,%d] B[%d,%d]: %lld wrong entries", (long long)s.m,
        (long long)s.n, (long long)s.k, alo, ahi, blo, bhi, (long long)bad);
}

// --- quantized linear ---------------------------------------------------------------
// Reference: quantize x per row exactly as the contract says, then f64 sums of
// dequantized products; the kernel must match to float rounding.
static void check_linear_s8(const Shape& s, int64_t group, bool asym, bool bias_on, float static_scale) {
  auto w = rand_f32(size_t(s.n * s.k));
  auto x = rand_f32(size_t(s.m * s.k), 2.f);
  auto bias = rand_f32(size_t(s.n));
  QuantizeOptions opt;
  opt.group = group;
  opt.asymmetric = asym;
  std::unique_ptr<PackedWeight> pw;
  Error e = quantize_weight(w.data(), s.n, s.k, opt, &pw);
  CHECK(e.ok(), "quantize_weight: %s", e.message.c_str());
  if (!e.ok()) return;
  const PackedS8& b = pw->view();
  std::vector<float> wq(size_t(s.n * s.k));
  dequantize_weight(b, wq.data());
  // dequantization error bound: |w - wq| <= s/2 per element
  std::vector<int8_t> vals(size_t(s.n * s.k));
  std::vector<float> sc(size_t(s.n * b.groups));
  std::vector<int32_t> zp(size_t(s.n * b.groups));
  unpack_s8(b, vals.data(), sc.data(), zp.data());
  const int64_t gsz = b.groups == 1 ? s.k : b.group;
  int64_t bad_q = 0;
  for (int64_t j = 0; j < s.n; ++j)
    for (int64_t q = 0; q < s.k; ++q) {
      const float sj = sc[j * b.groups + q / gsz];
      bad_q += std::fabs(w[j * s.k + q] - wq[j * s.k + q]) > 0.5f * sj * 1.0001f + 1e-7f;
    }
  CHECK(bad_q == 0, "quantize_weight round-trip error above s/2 at %lld entries", (long long)bad_q);

  std::vector<float> y(size_t(s.m * s.n), NAN);
  e = linear_s8(x.data(), s.m, s.k, b, bias_on ? bias.data() : nullptr, static_scale, y.data());
  CHECK(e.ok(), "linear_s8: %s", e.message.c_str());
  std::vector<double> ref(size_t(s.m * s.n));
  std::vector<int> xq(size_t(s.k));
  for (int64_t i = 0; i < s.m; ++i) {
    float amax = 0;
    for (int64_t q = 0; q < s.k; ++q) amax = std::fmax(amax, std::fabs(x[i * s.k + q]));
    const float sa = static_scale > 0 ? static_scale : (amax > 0 ? amax / 127.f : 1.f);
    const float inv = 1.f / sa;
    for (int64_t q = 0; q < s.k; ++q)
      xq[q] = int(std::fmin(127.f, std::fmax(-127.f, std::nearbyint(x[i * s.k + q] * inv))));
    for (int64_t j = 0; j < s.n; ++j) {
      double acc = 0;
      for (int64_t q = 0; q < s.k; ++q) {
        const int64_t g = q / gsz;
        acc += double(xq[q]) * (double(vals[j * s.k + q]) - zp[j * b.groups + g]) * sc[j * b.groups + g];
      }
      ref[i * s.n + j] = acc * sa + (bias_on ? bias[j] : 0.0);
    }
  }
  const double err = rel_err(y.data(), ref.data(), y.size());
  CHECK(err < 1e-5, "linear_s8 m=%lld n=%lld k=%lld group=%lld asym=%d: rel err %.3g vs quantized f64 reference",
        (long long)s.m, (long long)s.n, (long long)s.k, (long long)group, int(asym), err);
}

// --- f32 ---------------------------------------------------------------------------
static void check_f32(const Shape& s, bool bias_on) {
  auto a = rand_f32(size_t(s.m * s.k));
  auto b = rand_f32(size_t(s.k * s.n));
  auto w = rand_f32(size_t(s.n * s.k));
  auto bias = rand_f32(size_t(s.n));
  std::vector<float> c(size_t(s.m * s.n), NAN), y(size_t(s.m * s.n), NAN);
  Error e = matmul_f32(a.data(), s.m, s.k, b.data(), s.n, bias_on ? bias.data() : nullptr, c.data());
  CHECK(e.ok(), "matmul_f32: %s", e.message.c_str());
  e = linear_f32(a.data(), s.m, s.k, w.data(), s.n, bias_on ? bias.data() : nullptr, y.data());
  CHECK(e.ok(), "linear_f32: %s", e.message.c_str());
  std::vector<double> rc(c.size()), ry(y.size());
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double acc = bias_on ? bias[j] : 0, acc2 = acc;
      for (int64_t q = 0; q < s.k; ++q) {
        acc += double(a[i * s.k + q]) * b[q * s.n + j];
        acc2 += double(a[i * s.k + q]) * w[j * s.k + q];
      }
      rc[i * s.n + j] = acc;
      ry[i * s.n + j] = acc2;
    }
  const double e1 = rel_err(c.data(), rc.data(), c.size()), e2 = rel_err(y.data(), ry.data(), y.size());
  CHECK(e1 < 1e-5, "matmul_f32 m=%lld n=%lld k=%lld rel err %.3g", (long long)s.m, (long long)s.n, (long long)s.k, e1);
  CHECK(e2 < 1e-5, "linear_f32 m=%lld n=%lld k=%lld rel err %.3g", (long long)s.m, (long long)s.n, (long long)s.k, e2);
}

// --- activation quantizer: the ISA version equals the reference bit for bit ----------
static void check_quant_rows() {
  const KernelTable& t = kernels();
  for (int64_t k : {1, 7, 31, 32, 33, 100, 4099}) {
    const int64_t m = 5, k_pad = round_up(k, 64);
    auto x = rand_f32(size_t(m * k), 3.f);
    // row 1 has max |x| = 127 (scale 1) and exact .5 ties: round half to even must agree
    for (int64_t q = 0; q < k; ++q) x[size_t(k + q)] = float(q % 7) - 3.5f;
    x[size_t(k)] = 127.f;
    // row 2: a denormal maximum (1 / scale overflows to inf, 0 * inf is NaN): -127 or 0, never -128
    for (int64_t q = 0; q < k; ++q) x[size_t(2 * k + q)] = q % 3 == 0 ? 0.f : (q % 2 ? 1e-40f : -1e-40f);
    for (bool shift : {false, true}) {
      std::vector<uint8_t> o1(size_t(m * k_pad), 0x11), o2(size_t(m * k_pad), 0x22);
      std::vector<float> s1(m), s2(m);
      std::vector<int32_t> r1(size_t(m * 2)), r2(size_t(m * 2));
      QuantRowsArgs q;
      q.x = x.data(); q.ldx = k; q.m = m; q.k = k; q.k_pad = k_pad; q.ldo = k_pad; q.shift128 = shift;
      q.group = (k + 1) / 2 < 1 ? 1 : (k + 1) / 2; q.groups = (k + q.group - 1) / q.group;
      q.out = o1.data(); q.scale = s1.data(); q.rowsum = r1.data();
      quant_rows_ref(q, 0, m);
      q.out = o2.data(); q.scale = s2.data(); q.rowsum = r2.data();
      t.quant_rows(q, 0, m);
      CHECK(o1 == o2 && s1 == s2, "quant_rows(%s) differs from reference at k=%lld shift=%d", isa_name(t.isa),
            (long long)k, int(shift));
      CHECK(std::equal(r1.begin(), r1.begin() + m * q.groups, r2.begin()), "quant_rows rowsum differs k=%lld", (long long)k);
      CHECK(shift || std::count(o2.begin(), o2.end(), uint8_t(0x80)) == 0, "quant_rows(%s) wrote -128 at k=%lld",
            isa_name(t.isa), (long long)k);
    }
  }
}

// --- the expansion's packer: 16 rows -> one n16k4 block + group column sums -----------
static void check_pack_s8_block() {
  const KernelTable& t = kernels();
  for (int it = 0; it < 60; ++it) {
    const int64_t k_pad = 64 * std::uniform_int_distribution<int64_t>(1, it < 50 ? 8 : 130)(g_rng);
    const int64_t groups_of[] = {4, 8, 12, 16, 20, 32, 48, 64, 128, 256, k_pad};
    const int64_t group = std::min(k_pad, groups_of[std::uniform_int_distribution<int>(0, 10)(g_rng)]);
    const int64_t most = (k_pad + group - 1) / group;  // (groups - 1) * group < k_pad
    const int64_t groups = std::uniform_int_distribution<int64_t>(std::max<int64_t>(1, most - 2), most)(g_rng);
    const int64_t ld = k_pad + 64 * (it % 3);
    const bool with_m128 = it % 4 == 0;
    auto rows = rand_i8(size_t(16 * ld), with_m128 ? -128 : -127, 127);
    std::vector<int8_t> blk(size_t(16 * k_pad) + 64, 7);
    std::vector<int32_t> colsum(size_t(groups * 16) + 16, 12345);
    const bool got = t.pack_s8_block(rows.data(), ld, k_pad, group, groups, blk.data(), colsum.data());
    bool want_m128 = false;
    int bad = 0;
    for (int64_t jj = 0; jj < 16; ++jj) {
      for (int64_t c = 0; c < k_pad; ++c) {
        const int8_t v = rows[size_t(jj * ld + c)];
        want_m128 |= v == -128;
        bad += blk[size_t((c / 4) * 64 + jj * 4 + c % 4)] != v;
      }
      for (int64_t g = 0; g < groups; ++g) {
        int64_t sum = 0;
        for (int64_t c = g * group; c < std::min(k_pad, (g + 1) * group); ++c) sum += rows[size_t(jj * ld + c)];
        bad += colsum[size_t(g * 16 + jj)] != sum;
      }
    }
    for (size_t i = size_t(16 * k_pad); i < blk.size(); ++i) bad += blk[i] != 7;
    for (size_t i = size_t(groups * 16); i < colsum.size(); ++i) bad += colsum[i] != 12345;
    CHECK(bad == 0 && got == want_m128, "pack_s8_block k_pad=%lld group=%lld groups=%lld: %d wrong, m128 %d want %d",
          (long long)k_pad, (long long)group, (long long)groups, bad, int(got), int(want_m128));
  }
}

// --- x16 groups (quants.h) straight into the GEMM's blocks: the ISA's packer against
// the reference (rows gathered back and decoded, for Q5_K / Q6_K / Q8_0), bit for bit
// (codes, column sums, scales, offsets, the zero tail, the -128 flag)
static void check_x16_pack() {
  const KernelTable& t = kernels();
  std::uniform_int_distribution<int> byte(0, 255);
  // finite f16 of either sign, zero among them: an exponent field below 31
  auto f16 = [&] { return uint16_t((byte(g_rng) % 5 == 0 ? 0 : std::uniform_int_distribution<int>(0, 0x7bff)(g_rng)) | (byte(g_rng) & 1) << 15); };
  for (GgmlType type : {GgmlType::q4_0, GgmlType::q4_k, GgmlType::q5_k, GgmlType::q6_k, GgmlType::q8_0})
    for (int it = 0; it < 12; ++it) {
      const BlockFormat& f = *block_format(int(type));
      const int64_t k = f.block * std::uniform_int_distribution<int64_t>(1, it < 8 ? 9 : 40)(g_rng);
      const int64_t k_pad = (k + 63) / 64 * 64, groups = k / f.group;
      const int64_t unit = kX16Rows * f.bytes, bytes = k / f.block * unit;
      std::vector<uint8_t> group(static_cast<size_t>(bytes));
      for (auto& b : group) b = uint8_t(byte(g_rng));
      // Q8_0: -128 codes in some groups only
      if (type == GgmlType::q8_0) {
        if (it % 2)
          for (auto& b : group) b = b == 0x80 ? 0x7f : b;
        else
          group[size_t(2 * kX16Rows + byte(g_rng))] = 0x80;  // a code of the first block
      }
      auto put16 = [&](int64_t at) { const uint16_t h = f16(); group[size_t(at)] = uint8_t(h); group[size_t(at + 1)] = uint8_t(h >> 8); };
      if (type == GgmlType::q4_0)
        for (int64_t b = 0; b < k / 32; ++b)
          for (int64_t r = 0; r < kX16Rows; ++r) put16(x16_q4_0_scales_at(b) + 2 * r);
      else  // d (and dmin) at the start of each super-block / block
        for (int64_t u = 0; u < k / f.block; ++u)
          for (int64_t i = 0; i < (f.offsets ? 2 : 1) * kX16Rows; ++i) put16(u * unit + 2 * i);
      struct Out {
        std::vector<int8_t> blk;
        std::vector<int32_t> colsum;
        std::vector<float> scales, offsets;
        bool m128;
      } want, got;
      for (Out* o : {&want, &got}) {
        o->blk.assign(size_t(k_pad * kX16Rows), 99);
        o->colsum.assign(size_t(groups * kX16Rows), 12345);
        o->scales.assign(size_t(groups * kX16Rows), 7.f);
        o->offsets.assign(size_t(groups * kX16Rows), 7.f);
      }
      want.m128 = x16_pack_ref(type, group.data(), k, k_pad, want.blk.data(), want.colsum.data(), want.scales.data(), want.offsets.data());
      got.m128 = t.x16_pack(type, group.data(), k, k_pad, got.blk.data(), got.colsum.data(), got.scales.data(), got.offsets.data());
      const bool same = got.blk == want.blk && got.colsum == want.colsum && got.m128 == want.m128 &&
                        !std::memcmp(got.scales.data(), want.scales.data(), got.scales.size() * 4) &&
                        !std::memcmp(got.offsets.data(), want.offsets.data(), got.offsets.size() * 4);
      CHECK(same, "x16_pack %s k=%lld differs from the reference", f.name, (long long)k);
      if (type == GgmlType::q8_0) CHECK(want.m128 == !(it % 2), "x16_pack Q8_0: -128 flag %d in case %d", int(want.m128), it);
    }
}

// --- concurrency: several threads use the pool at once -------------------------------
static void check_concurrency() {
  const Shape s{37, 129, 300};
  auto a = rand_i8(size_t(s.m * s.k), -127, 127);
  auto b = rand_i8(size_t(s.n * s.k));
  std::unique_ptr<PackedWeight> pw;
  pack_s8(b.data(), s.n, s.k, 0, nullptr, nullptr, &pw);
  std::vector<int32_t> want(size_t(s.m * s.n));
  matmul_s8(a.data(), s.m, s.k, pw->view(), want.data());
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&] {
      for (int r = 0; r < 20; ++r) {
        std::vector<int32_t> c(want.size());
        matmul_s8(a.data(), s.m, s.k, pw->view(), c.data());
        if (c != want) bad++;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(bad == 0, "concurrent matmul_s8 gave %d wrong results", bad.load());
}

// --- narrow weight ranges (PackedS8::lo / hi) --------------------------------------
// Weights whose values are known to lie in [lo, hi] (the expanded GGUF block types)
// take the AVX2 small-code path, which sums pair products in int16 over several
// k-steps. Its bound must hold at the extremes: every weight at lo or hi, every
// activation at +-127 (inputs of +-1 quantize to +-127 per block), all of one sign
// or mixed. The product of +-1 inputs and integer weights is an integer, so the
// result must equal the integer reference to the f32 rounding of the per-group
// terms (a wrapped int16 sum is off by 65536 / 127 per block).
static void check_small_codes() {
  struct Range { int lo, hi, group; };
  for (const Range rg : {Range{-8, 7, 32}, Range{0, 15, 32}, Range{-16, 15, 32}, Range{0, 31, 32}, Range{-32, 31, 16},
                         Range{0, 3, 16}, Range{-4, 3, 16}, Range{0, 63, 16}, Range{-64, 63, 16}, Range{-8, 7, 128},
                         Range{-16, 15, 128}, Range{0, 15, 128}})
    for (int pattern = 0; pattern < 6; ++pattern) {
      const int64_t m = pattern % 2 ? 5 : 16, n = 48, k = 512;
      std::vector<int8_t> w(size_t(n * k));
      std::vector<float> x(size_t(m * k));
      std::uniform_int_distribution<int> coin(0, 1);
      for (auto& v : w) v = int8_t(pattern < 2 ? rg.hi : pattern < 4 ? rg.lo : (coin(g_rng) ? rg.hi : rg.lo));
      for (auto& v : x) v = pattern == 2 || pattern == 3 ? -1.f : pattern < 2 ? 1.f : (coin(g_rng) ? 1.f : -1.f);
      std::vector<float> y(size_t(m * n), -1.f);
      // groups of 16 / 32: per-block activations (the GGUF types); of 128: per-row (int4)
      auto expand = [&](int64_t j, int8_t* row, float* sc) {
        std::memcpy(row, w.data() + j * k, size_t(k));
        for (int64_t g = 0; g < k / rg.group; ++g) sc[g] = 1.f;
      };
      Error e = rg.group > 32 ? linear_s8_expanded(n, k, rg.group, expand, x.data(), m, nullptr, y.data(), rg.lo, rg.hi)
                              : linear_s8_expanded_blocks(n, k, rg.group, 32, [&](int64_t j, int8_t* row, float* sc, float*) {
                                  expand(j, row, sc);
                                }, false, x.data(), m, y.data(), nullptr, rg.lo, rg.hi);
      CHECK(e.ok(), "small codes: %s", e.message.c_str());
      // bound: f32 rounding of the per-group terms, relative to the sum of |products|
      // (mixed signs cancel); a wrapped int16 sum is off by >= 65536 / 127 ~ 516
      int64_t bad = 0;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double ref = 0, mag = 0;
          for (int64_t q = 0; q < k; ++q) {
            ref += double(x[i * k + q]) * w[j * k + q];
            mag += std::fabs(double(x[i * k + q]) * w[j * k + q]);
          }
          bad += std::fabs(y[i * n + j] - ref) > 1e-5 * (mag + 1);
        }
      CHECK(bad == 0, "small codes [%d, %d] group %d pattern %d: %lld wrong entries", rg.lo, rg.hi, rg.group, pattern,
            (long long)bad);
    }
}

static int run_isa(const std::string& name, bool quick) {
  Error e = set_isa(name);
  if (!e.ok()) {
    std::printf("SKIP %s: %s\n", name.c_str(), e.message.c_str());
    return 77;
  }
  Isa isa;
  const bool emulated = parse_isa(name, &isa) && isa_emulated(isa);
  std::printf("isa %s%s (int8 %s, f32 %s), %d threads\n", name.c_str(), emulated ? " (emulated intrinsics)" : "",
              runtime_info().isa.c_str(), runtime_info().sgemm.c_str(), num_threads());
  check_quant_rows();
  check_pack_s8_block();
  check_x16_pack();
  check_small_codes();
  for (const Shape& s : kShapes) {
    check_matmul_s8(s, -127, 127, -128, 127);  // activations never hold -128
    check_matmul_s8(s, -128, 127, -127, 127);  // the other orientation of the AVX2 sign trick
    check_matmul_s8(s, -128, 127, -128, 127);  // both: AVX2 must route to an exact path
    check_matmul_s8(s, 120, 127, 120, 127);    // large same-sign products (saturation bait)
    check_matmul_s8(s, -128, -120, -128, -120);
    for (int64_t group : {int64_t(0), int64_t(32), int64_t(64), int64_t(128)})
      for (bool asym : {false, true}) check_linear_s8(s, group, asym, (s.n + group) % 2 == 0, 0.f);
    check_linear_s8(s, 0, false, true, 0.02f);
    check_f32(s, s.k % 2 == 0);
  }
  if (!quick) {  // large shapes (row blocks, many tasks); --quick for the slow emulated paths
    check_matmul_s8({512, 4096, 4096}, -127, 127, -128, 127);
    check_linear_s8({512, 1024, 4096}, 0, false, true, 0.f);
    check_f32({300, 515, 1031}, true);
  }
  check_concurrency();
  for (int threads : {1, 3}) {
    set_threads(threads);
    check_matmul_s8({67, 300, 333}, -127, 127, -128, 127);
    check_f32({67, 300, 333}, true);
  }
  std::printf("%s: %s (%d failures)\n", name.c_str(), g_failures ? "FAILED" : "ok", g_failures);
  return g_failures ? 1 : 0;
}

static int run_dispatch() {
  const RuntimeInfo r = runtime_info();
  std::printf("cpu: %s %s; features:", r.vendor.c_str(), r.brand.c_str());
  for (auto& f : r.features) std::printf(" %s", f.c_str());
  std::printf("\nbest int8 path %s; supported:", r.isa.c_str());
  for (auto& s : r.supported_isas) std::printf(" %s", s.c_str());
  std::printf("\n");
  CHECK(isa_supported(best_isa()), "best ISA must be supported");
  CHECK(!set_isa("bogus").ok(), "unknown ISA must be refused");
  for (const char* n : {"ref", "avx2", "avxvnni", "avx512vnni", "amx"}) {
    Isa isa;
    CHECK(parse_isa(n, &isa) && std::string(isa_name(isa)) == n, "parse_isa(%s)", n);
    // set_isa agrees with isa_supported, and never enables a path the CPU lacks
    CHECK(set_isa(n).ok() == isa_supported(isa), "set_isa(%s) disagrees with isa_supported", n);
  }
  const CpuFeatures& f = cpu_features();
  CHECK(!f.avx512vnni || f.os_avx512, "AVX-512 reported without OS ZMM state");
  CHECK(!f.amx_int8 || (f.os_amx && f.amx_permitted), "AMX reported without OS tile state and permission");
  std::printf("dispatch: %s\n", g_failures ? "FAILED" : "ok");
  return g_failures ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--isa") return run_isa(argv[2], argc >= 4 && std::string(argv[3]) == "--quick");
  if (argc >= 2 && std::string(argv[1]) == "--dispatch") return run_dispatch();
  std::fprintf(stderr, "usage: test_kernels --isa NAME | --dispatch\n");
  return 2;
}
