// fuzz_native.cpp - a fuzz harness for the native code that takes untrusted
// bytes from model files: sparse weights from their saved arrays
// (sparse_from_parts), 4-bit weights from saved nibbles (q4_from_nibbles),
// GGUF Q8_0 blocks (pack_q8_0_stream) and F16 / BF16 / Q8_0 widening. An
// input either is rejected with an Error, or gives a weight that the kernels
// then run on (m = 1, 3 and 20: the GEMV, small-m and prefill paths) and whose
// result must match the dense product of its own values - under ASan / UBSan
// any out-of-bounds access is a crash.
//
// Built two ways (CMakeLists.txt):
//  - libFuzzer (clang, -fsanitize=fuzzer,address,undefined): LLVMFuzzerTestOneInput;
//  - standalone (any compiler, SPARQ_FUZZ_STANDALONE): `fuzz_native [runs] [seed]`
//    builds valid inputs from random weights, mutates a few bytes of most of them,
//    and feeds them through the same entry point.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "../cpu/q4.h"
#include "../cpu/sparse.h"
#include "sparq/sparq.h"

using namespace sparq;

namespace {

// inputs seen / accepted (and run) per target: sparse, int4, Q8_0, widen
long g_seen[4], g_ran[4];

// Reads the input front to back; past its end every read is zero.
struct Reader {
  const uint8_t* p;
  size_t n, at = 0;
  uint8_t u8() { return at < n ? p[at++] : 0; }
  uint32_t u32() { uint32_t v = 0; for (int i = 0; i < 4; ++i) v |= uint32_t(u8()) << (8 * i); return v; }
  // a k in [1, 300] from two bytes (read in order)
  int64_t dim300() {
    const int lo = u8(), hi = u8();
    return 1 + (lo | (hi << 8)) % 300;
  }
  void bytes(void* dst, size_t len) {
    uint8_t* d = static_cast<uint8_t*>(dst);
    for (size_t i = 0; i < len; ++i) d[i] = u8();
  }
};

[[noreturn]] void fail(const char* what, double a, double b) {
  std::fprintf(stderr, "fuzz_native: %s (%g vs %g)\n", what, a, b);
  std::abort();
}

// x: integers in [-127, 127] with one row holding 127, so int8 activation
// quantization is exact and int8 weights give exact integer sums.
std::vector<float> activations(int64_t m, int64_t k) {
  std::vector<float> x(size_t(m * k));
  for (int64_t i = 0; i < m * k; ++i) x[size_t(i)] = float(int((i * 37 + 11) % 255) - 127);
  for (int64_t i = 0; i < m; ++i) x[size_t(i * k)] = 127.f;
  return x;
}

bool finite_small(const float* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]) || std::fabs(v[i]) > 1e4f) return false;
  return true;
}

// y = x . W^T from W dense [n, k], in double, with sum |x| |w| of each output
// (what f32 rounding error scales with: large products may cancel to a small y)
struct Product {
  std::vector<double> y, abs;
};
Product dense_product(const std::vector<float>& w, const std::vector<float>& x, int64_t m, int64_t n, int64_t k) {
  Product p{std::vector<double>(size_t(m * n), 0.0), std::vector<double>(size_t(m * n), 0.0)};
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (int64_t q = 0; q < k; ++q) {
        const double t = double(x[size_t(i * k + q)]) * w[size_t(j * k + q)];
        s += t;
        a += std::fabs(t);
      }
      p.y[size_t(i * n + j)] = s;
      p.abs[size_t(i * n + j)] = a;
    }
  return p;
}

// each output within rel x max(1, sum |x| |w|) of the reference
void compare(const char* what, const std::vector<float>& y, const Product& ref, double rel) {
  for (size_t i = 0; i < y.size(); ++i)
    if (!(std::fabs(y[i] - ref.y[i]) <= rel * std::fmax(1.0, ref.abs[i]))) fail(what, y[i], ref.y[i]);
}

void fuzz_sparse(Reader& r) {
  SparseParts p;
  p.format = SparseFormat(r.u8() % 3);
  const uint8_t flags = r.u8();
  p.int8 = flags & 1;
  p.narrow = flags & 2;
  p.int4 = flags & 4;  // with int8: refused
  p.group = int64_t(32) << (flags >> 3 & 3);  // 256: refused
  p.n = 1 + r.u8() % 16;
  p.k = r.dim300();
  p.N = r.u8() % 9;
  p.M = r.u8() % 17;
  p.nnz = int64_t(r.u32() % uint32_t(p.n * p.k + 64));
  const int64_t words = (p.k + 31) / 32;
  // the arrays the format uses, in this order: row_ptr, col (csr), mask (bitmask), idx (nm)
  std::vector<int64_t> row_ptr(size_t(p.n + 1));
  if (p.format != SparseFormat::nm)
    for (auto& v : row_ptr) { uint64_t u = r.u32(); u |= uint64_t(r.u32()) << 32; std::memcpy(&v, &u, 8); }
  std::vector<uint8_t> col(p.format == SparseFormat::csr ? size_t(p.nnz) * (p.narrow ? 2 : 4) + 1 : 1);
  r.bytes(col.data(), col.size() - 1);
  std::vector<uint32_t> mask(p.format == SparseFormat::bitmask ? size_t(p.n * words) + 1 : 1);
  r.bytes(mask.data(), (mask.size() - 1) * 4);
  std::vector<uint8_t> idx;
  if (p.format == SparseFormat::nm && p.N >= 1 && p.M >= 1) {
    const int64_t groups = (p.k + p.M - 1) / p.M, bits = p.M <= 2 ? 1 : p.M <= 4 ? 2 : 4;
    idx.resize(size_t(p.n * ((groups * p.N * bits + 7) / 8)) + 1);
    r.bytes(idx.data(), idx.size() - 1);
  }
  // N:M stores n * groups * N values; csr / bitmask nnz
  int64_t nvals = p.nnz;
  if (p.format == SparseFormat::nm && p.N >= 1 && p.M >= 1) nvals = p.n * ((p.k + p.M - 1) / p.M) * p.N;
  std::vector<uint8_t> values(size_t(p.int4 ? (nvals + 1) / 2 : nvals * (p.int8 ? 1 : 4)) + 4);
  r.bytes(values.data(), values.size() - 4);
  std::vector<float> scale(size_t(p.n));
  r.bytes(scale.data(), scale.size() * 4);
  std::vector<uint16_t> scale4(size_t(p.n * ((p.k + p.group - 1) / p.group)));
  r.bytes(scale4.data(), scale4.size() * 2);
  p.scale4 = scale4.data();
  p.row_ptr = p.format == SparseFormat::nm ? nullptr : row_ptr.data();
  p.col = col.data();
  p.mask = mask.data();
  p.idx = idx.empty() ? nullptr : idx.data();
  p.values = values.data();
  p.scale = scale.data();
  if (p.format == SparseFormat::nm) p.nnz = nvals;
  std::unique_ptr<SparseWeight> w;
  ++g_seen[0];
  if (Error e = sparse_from_parts(p, &w); !e.ok()) {
    if (std::getenv("SPARQ_FUZZ_VERBOSE")) std::fprintf(stderr, "sparse rejected: %s\n", e.message.c_str());
    return;
  }
  ++g_ran[0];
  // accepted: the kernels must run in bounds and agree with the dense values
  std::vector<float> dense(size_t(w->n * w->k));
  sparse_to_dense(*w, dense.data());
  if (!finite_small(dense.data(), dense.size())) {
    std::vector<float> x = activations(1, w->k), y(size_t(w->n));
    spmm(*w, x.data(), 1, nullptr, y.data());  // only bounds matter here
    return;
  }
  for (int64_t m : {1, 3, 20}) {
    std::vector<float> x = activations(m, w->k), y(size_t(m * w->n));
    const Error e = spmm(*w, x.data(), m, nullptr, y.data());
    if (!e.ok()) {
      std::fprintf(stderr, "fuzz_native: spmm refused an accepted weight: %s\n", e.message.c_str());
      std::abort();
    }
    compare(w->int4 ? "sparse int4 product" : w->int8 ? "sparse int8 product" : "sparse f32 product", y, dense_product(dense, x, m, w->n, w->k), 1e-4);
  }
}

void fuzz_q4(Reader& r) {
  const int64_t n = 1 + r.u8() % 8;
  const int64_t k = r.dim300();
  const uint8_t g = r.u8();
  const int64_t group = g % 4 == 0 ? 32 : g % 4 == 1 ? 64 : g % 4 == 2 ? 128 : g;
  const int64_t k_pad = (k + 31) / 32 * 32, groups = group > 0 ? (k + group - 1) / group : 1;
  std::vector<uint8_t> nib(size_t(n * k_pad / 2));
  r.bytes(nib.data(), nib.size());
  std::vector<float> sc(size_t(n * groups));
  r.bytes(sc.data(), sc.size() * 4);
  std::unique_ptr<PackedQ4> w;
  ++g_seen[1];
  if (!q4_from_nibbles(nib.data(), sc.data(), n, k, group, &w).ok()) return;
  ++g_ran[1];
  std::vector<int8_t> q(size_t(n * k));
  q4_unpack(*w, q.data());
  std::vector<float> dense(size_t(n * k));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < k; ++c) dense[size_t(j * k + c)] = float(q[size_t(j * k + c)]) * w->scale[size_t(j * w->groups + c / w->group)];
  const bool check = finite_small(dense.data(), dense.size());
  for (int64_t m : {1, 3, 20}) {
    std::vector<float> x = activations(m, k), y(size_t(m * n));
    if (!linear_q4(*w, x.data(), m, y.data()).ok()) std::abort();
    if (check) compare("int4 product", y, dense_product(dense, x, m, n, k), 1e-4);
  }
}

void fuzz_q8_0(Reader& r) {
  const int64_t n = 1 + r.u8() % 8;
  const int64_t k = r.dim300();
  const int64_t blocks_per_row = (k + 31) / 32;
  std::unique_ptr<PackedWeight> w;
  const Error e = pack_q8_0_stream(n, k, [&](uint8_t* blocks, int64_t r0, int64_t r1) {
    r.bytes(blocks, size_t((r1 - r0) * blocks_per_row * 34));
    return Error{};
  }, &w);
  ++g_seen[2];
  if (!e.ok()) return;
  ++g_ran[2];
  std::vector<float> x = activations(3, k), y(size_t(3 * n));
  if (!linear_s8(x.data(), 3, k, w->view(), nullptr, 0.f, y.data()).ok()) std::abort();
}

void fuzz_widen(Reader& r) {
  const int type = r.u8();
  const int64_t count = r.u8() * 4;
  const size_t bytes = size_t(count) * 4 + 64;
  std::vector<uint8_t> src(bytes);
  r.bytes(src.data(), bytes);
  std::vector<float> out(size_t(count) + 1);
  ++g_seen[3];
  if (widen_to_f32(src.data(), type, count, out.data()).ok()) ++g_ran[3];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader r{data, size};
  switch (r.u8() % 4) {
    case 0: fuzz_sparse(r); break;
    case 1: fuzz_q4(r); break;
    case 2: fuzz_q8_0(r); break;
    default: fuzz_widen(r); break;
  }
  return 0;
}

// Valid inputs from random weights (the standalone runs mutate them; the
// libFuzzer build writes some as its seed corpus).
namespace {

struct Writer {
  std::vector<uint8_t> b;
  void u8(int v) { b.push_back(uint8_t(v)); }
  void u32(uint32_t v) { for (int i = 0; i < 4; ++i) u8(int(v >> (8 * i) & 255)); }
  void raw(const void* p, size_t n) { const uint8_t* q = static_cast<const uint8_t*>(p); b.insert(b.end(), q, q + n); }
};

std::vector<uint8_t> valid_sparse(std::mt19937& rng) {
  const int fmt = int(rng() % 3);
  const int vt = int(rng() % 3);  // f32, int8, int4 (bitmask and nm only)
  const bool int8 = vt == 1, int4 = vt == 2 && fmt != 0;
  const int gcode = int(rng() % 3);  // int4 groups of 32 << gcode
  const int64_t n = 1 + rng() % 16, k = 1 + rng() % 299;
  const int N = fmt == 2 ? (rng() % 2 ? 2 : 4) : 0, M = fmt == 2 ? N * 2 : 0;
  std::vector<float> w(size_t(n * k));
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < k; ++c) {
      float v = nd(rng);
      if (fmt == 2 ? (c % M) >= N : rng() % 3 == 0) v = 0.f;  // N:M: the first N of every M kept
      w[size_t(j * k + c)] = v;
    }
  std::unique_ptr<SparseWeight> s;
  if (!sparse_from_dense(w.data(), n, k, SparseFormat(fmt), N, M, int8, &s).ok()) return {};
  if (int4) {
    std::unique_ptr<SparseWeight> q;
    if (!sparse_quantize4(*s, int64_t(32) << gcode, &q).ok()) return {};
    s = std::move(q);
  }
  Writer o;
  o.u8(0);
  o.u8(fmt);
  o.u8((int8 ? 1 : 0) | (s->narrow ? 2 : 0) | (int4 ? 4 : 0) | gcode << 3);
  o.u8(int(n - 1));
  const int kk = int(k - 1);
  o.u8(kk & 255);
  o.u8(kk >> 8);
  o.u8(N);
  o.u8(M);
  o.u32(uint32_t(fmt == 2 ? 0 : s->nnz));  // nm: the count comes from the layout
  if (fmt != 2)
    for (int64_t j = 0; j <= n; ++j) o.raw(&s->row_ptr[size_t(j)], 8);
  if (fmt == 0) {
    if (s->narrow) o.raw(s->col16.data(), size_t(s->nnz) * 2);
    else o.raw(s->col.data(), size_t(s->nnz) * 4);
  }
  if (fmt == 1) o.raw(s->mask.data(), size_t(n * s->words()) * 4);
  if (fmt == 2) o.raw(s->idx.data(), size_t(n * s->idx_row_bytes()));
  if (int4) {
    o.raw(s->v4.data(), size_t((s->nnz + 1) / 2));
    for (int64_t j = 0; j < n; ++j) o.u32(0);           // the int8 row scales, unused
    o.raw(s->scale4.data(), s->scale4.size() * 2);
    return o.b;
  }
  if (int8) o.raw(s->vq.data(), s->vq.size());
  else o.raw(s->vf.data(), s->vf.size() * 4);
  if (int8) o.raw(s->scale.data(), s->scale.size() * 4);
  return o.b;
}

std::vector<uint8_t> valid_q4(std::mt19937& rng) {
  const int64_t n = 1 + rng() % 8, k = 1 + rng() % 299;
  const int gc = int(rng() % 3);
  const int64_t group = gc == 0 ? 32 : gc == 1 ? 64 : 128;
  std::vector<float> w(size_t(n * k));
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& v : w) v = nd(rng);
  std::unique_ptr<PackedQ4> q;
  if (!q4_quantize(w.data(), n, k, group, &q).ok()) return {};
  Writer o;
  o.u8(1);
  o.u8(int(n - 1));
  o.u8(int(k - 1) & 255);
  o.u8(int(k - 1) >> 8);
  o.u8(gc);
  o.raw(q->data.data(), size_t(n * q->row_bytes()));
  o.raw(q->scale.data(), q->scale.size() * 4);
  return o.b;
}

}  // namespace

#ifndef SPARQ_FUZZ_STANDALONE
// SPARQ_FUZZ_SEED_CORPUS=DIR: write 300 inputs built from valid weights there first
// (libFuzzer reads its corpus folders after this runs).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("SPARQ_FUZZ_SEED_CORPUS");
  if (!dir) return 0;
  std::mt19937 rng(12345);
  for (int i = 0; i < 300; ++i) {
    const std::vector<uint8_t> in = i % 2 ? valid_q4(rng) : valid_sparse(rng);
    if (in.empty()) continue;
    char name[4096];
    std::snprintf(name, sizeof name, "%s/seed-%03d", dir, i);
    if (FILE* f = std::fopen(name, "wb")) {
      std::fwrite(in.data(), 1, in.size(), f);
      std::fclose(f);
    }
  }
  return 0;
}
#else
int main(int argc, char** argv) {
  const long runs = argc > 1 ? std::atol(argv[1]) : 20000;
  const unsigned seed = argc > 2 ? unsigned(std::atol(argv[2])) : 1u;
  std::mt19937 rng(seed);
  long accepted_shapes = 0;
  for (long i = 0; i < runs; ++i) {
    std::vector<uint8_t> in;
    const unsigned kind = rng() % 10;
    if (kind < 5) in = valid_sparse(rng);
    else if (kind < 8) in = valid_q4(rng);
    if (in.empty()) {  // random bytes for every target
      in.resize(rng() % 2048);
      for (auto& b : in) b = uint8_t(rng());
    } else {
      ++accepted_shapes;
      const unsigned edits = std::getenv("SPARQ_FUZZ_VALID") ? 0 : rng() % 5;  // 0: the valid input as is
      for (unsigned e = 0; e < edits && in.size() > 1; ++e) in[1 + rng() % (in.size() - 1)] ^= uint8_t(1u << (rng() % 8));
      if (edits && rng() % 8 == 0) in.resize(rng() % in.size());
    }
    LLVMFuzzerTestOneInput(in.data(), in.size());
  }
  std::printf("fuzz_native: %ld inputs (seed %u, %ld built from valid weights) ran clean; accepted and run / seen: "
              "sparse %ld / %ld, int4 %ld / %ld, Q8_0 %ld / %ld, widen %ld / %ld\n",
              runs, seed, accepted_shapes, g_ran[0], g_seen[0], g_ran[1], g_seen[1], g_ran[2], g_seen[2], g_ran[3], g_seen[3]);
  return 0;
}
#endif
