// gemm_s8.cpp - int8 weight packing, weight quantizers and the int8 GEMM
// drivers (exact int32 matmul and the quantized linear with dynamic per-token
// activations). Work is split over the thread pool; the kernels come from the
// dispatch table (kernels.h).
#include <algorithm>
#include <atomic>
#include <functional>
#include <vector>
#include <cmath>
#include <cstring>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#include "dispatch.h"
#include "scratch.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

// --- packed storage ---------------------------------------------------------
PackedWeight::~PackedWeight() { aligned_free(mem_); }

Error PackedWeight::create(int64_t n, int64_t k, int64_t group, bool with_scales, bool asymmetric,
                           std::unique_ptr<PackedWeight>* out) {
  if (n <= 0 || k <= 0) return Error::make(Status::invalid_argument, "packed int8 weight needs n > 0 and k > 0");
  // groups must tile k_pad exactly: a divisor of 64 (>= 4) or a multiple of 64
  if (group < 0 || (group > 0 && (group % kS8StepK != 0 || (group % kS8AlignK != 0 && kS8AlignK % group != 0))))
    return Error::make(Status::invalid_argument,
                       "group size must be 4, 8, 16, 32 or a multiple of 64; got " + std::to_string(group));
  if (n > (int64_t(1) << 31) || k > (int64_t(1) << 31) || n * k > (int64_t(1) << 40))
    return Error::make(Status::invalid_argument, "packed int8 weight is too large");
  // a group as large as k or larger is one group per row: k_pad follows k, not the group
  // (round_up(k, group) of a huge group would make an absurd, or wrapping, allocation)
  const int64_t requested = group;
  if (group >= k) group = 0;
  std::unique_ptr<PackedWeight> w(new (std::nothrow) PackedWeight());
  if (!w) return Error::make(Status::out_of_memory, "out of memory");
  w->user_group_ = requested;
  PackedS8& p = w->p_;
  p.n = n;
  p.k = k;
  p.n_pad = round_up(n, kS8BlockN);
  p.k_pad = round_up(k, std::max<int64_t>(kS8AlignK, group));
  if (group == 0) {
    p.group = p.k_pad;
    p.groups = 1;
  } else {
    p.group = group;
    p.groups = (k + group - 1) / group;
  }
  const size_t data_b = size_t(p.n_pad * p.k_pad);
  const size_t vec_b = size_t(round_up(p.n_pad * p.groups * 4, 64));
  const size_t total = data_b + vec_b * (1 + (with_scales ? 1 : 0) + (asymmetric ? 1 : 0));
  char* mem = static_cast<char*>(aligned_malloc(total));
  if (!mem) return Error::make(Status::out_of_memory, "out of memory allocating " + std::to_string(total) + " bytes");
  std::memset(mem, 0, total);
  w->mem_ = mem;
  w->bytes_ = total;
  p.data = reinterpret_cast<int8_t*>(mem);
  char* q = mem + data_b;
  p.colsum = reinterpret_cast<int32_t*>(q);
  q += vec_b;
  if (with_scales) { p.scales = reinterpret_cast<float*>(q); q += vec_b; }
  if (asymmetric) p.zeros = reinterpret_cast<int32_t*>(q);
  *out = std::move(w);
  return Error{};
}

// Writes row j of the weight (values, per-group scales/zeros) into the layout
// and updates its column sums.
static void pack_row(PackedS8& p, int64_t j, const int8_t* row, const float* scales, const int32_t* zeros) {
  const int64_t nb = j / kS8BlockN, jj = j % kS8BlockN, ksteps = p.k_pad / kS8StepK;
  int8_t* blk = p.data + nb * ksteps * kS8BlockBytes + jj * kS8StepK;
  for (int64_t kk = 0; kk < p.k; ++kk) blk[(kk / 4) * kS8BlockBytes + (kk % 4)] = row[kk];
  for (int64_t g = 0; g < p.groups; ++g) {
    const int64_t k0 = g * p.group, k1 = std::min(k0 + p.group, p.k);
    int32_t sum = 0;
    for (int64_t kk = k0; kk < k1; ++kk) sum += row[kk];
    const int64_t idx = s8_group_index(nb, g, p.groups) + jj;
    p.colsum[idx] = sum;
    if (p.scales) p.scales[idx] = scales ? scales[g] : 1.f;
    if (p.zeros) p.zeros[idx] = zeros ? zeros[g] : 0;
  }
}

static bool any_m128(const int8_t* v, int64_t count) {
  uint8_t any = 0;  // no early exit: the loop vectorizes
  for (int64_t i = 0; i < count; ++i) any |= uint8_t(v[i] == -128);
  return any != 0;
}

Error pack_s8(const int8_t* w, int64_t n, int64_t k, int64_t group, const float* scales, const int32_t* zeros,
              std::unique_ptr<PackedWeight>* out) {
  std::unique_ptr<PackedWeight> pw;
  Error e = PackedWeight::create(n, k, group, scales != nullptr, zeros != nullptr, &pw);
  if (!e.ok()) return e;
  PackedS8& p = pw->p_;
  const int64_t gs = p.groups;
  std::atomic<bool> m128{false};
  parallel_for((n + 63) / 64, [&](int64_t t) {
    const int64_t j0 = t * 64, j1 = std::min(n, t * 64 + 64);
    for (int64_t j = j0; j < j1; ++j)
      pack_row(p, j, w + j * k, scales ? scales + j * gs : nullptr, zeros ? zeros + j * gs : nullptr);
    if (any_m128(w + j0 * k, (j1 - j0) * k)) m128.store(true);
  });
  p.has_m128 = m128.load();
  *out = std::move(pw);
  return Error{};
}

bool pack_s8_rows(PackedS8& p, int64_t r0, int64_t r1, const int8_t* rows, const float* scales) {
  std::atomic<bool> m128{false};
  parallel_for((r1 - r0 + 63) / 64, [&](int64_t t) {
    const int64_t j0 = r0 + t * 64, j1 = std::min(r1, j0 + 64);
    for (int64_t j = j0; j < j1; ++j) pack_row(p, j, rows + (j - r0) * p.k, scales ? scales + (j - r0) * p.groups : nullptr, nullptr);
    if (any_m128(rows + (j0 - r0) * p.k, (j1 - j0) * p.k)) m128.store(true);
  });
  if (m128.load()) p.has_m128 = true;
  return m128.load();
}

void unpack_s8(const PackedS8& p, int8_t* values, float* scales, int32_t* zeros) {
  const int64_t ksteps = p.k_pad / kS8StepK;
  for (int64_t j = 0; j < p.n; ++j) {
    const int64_t nb = j / kS8BlockN, jj = j % kS8BlockN;
    const int8_t* blk = p.data + nb * ksteps * kS8BlockBytes + jj * kS8StepK;
    if (values)
      for (int64_t kk = 0; kk < p.k; ++kk) values[j * p.k + kk] = blk[(kk / 4) * kS8BlockBytes + (kk % 4)];
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t idx = s8_group_index(nb, g, p.groups) + jj;
      if (scales) scales[j * p.groups + g] = p.scales ? p.scales[idx] : 1.f;
      if (zeros) zeros[j * p.groups + g] = p.zeros ? p.zeros[idx] : 0;
    }
  }
}

// --- weight quantizers --------------------------------------------------------
// Quantizes rows [r0, r1) of the weight (w points at row r0) into p.
static void quantize_rows_into(PackedS8& p, const float* w, int64_t r0, int64_t r1, const QuantizeOptions& opt,
                               std::atomic<bool>& m128) {
  const int64_t k = p.k, n = r1;
  const int64_t gsz = p.groups == 1 ? k : p.group;
  parallel_for((r1 - r0 + 15) / 16, [&](int64_t t) {
    // per-thread scratch, reused across calls (no allocator churn in pool threads)
    thread_local std::vector<int8_t> row;
    thread_local std::vector<float> sc;
    thread_local std::vector<int32_t> zp;
    row.resize(size_t(k));
    sc.resize(size_t(p.groups));
    zp.resize(size_t(p.groups));
    // plain pointers: inner loops must not re-resolve the thread-local vectors
    int8_t* const rowp = row.data();
    bool local_m128 = false;
    for (int64_t j = r0 + t * 16; j < std::min(n, r0 + t * 16 + 16); ++j) {
      const float* wr = w + (j - r0) * k;
      for (int64_t g = 0; g < p.groups; ++g) {
        const int64_t k0 = g * gsz, k1 = std::min(k0 + gsz, k);
        if (!opt.asymmetric) {
          float amax = 0.f;
          for (int64_t q = k0; q < k1; ++q) {
            const float a = std::fabs(wr[q]);
            amax = a > amax ? a : amax;  // NaN-free weights: no fmax call needed
          }
          const float s = amax > 0.f ? amax / 127.f : 1.f;
          const float inv = 1.f / s;
          for (int64_t q = k0; q < k1; ++q) {
            const float v = std::nearbyint(wr[q] * inv);
            rowp[q] = int8_t(v > 127.f ? 127.f : v < -127.f ? -127.f : v == v ? v : -127.f);  // NaN: -127 as before
          }
          sc[g] = s;
          zp[g] = 0;
        } else {
          float mn = 0.f, mx = 0.f;  // the range always contains 0 so that 0 is exact
          for (int64_t q = k0; q < k1; ++q) { mn = std::fmin(mn, wr[q]); mx = std::fmax(mx, wr[q]); }
          float s = (mx - mn) / 255.f;
          if (!(s > 0.f)) s = 1.f;
          const float inv = 1.f / s;
          const int32_t z = int32_t(std::fmin(127.f, std::fmax(-128.f, std::nearbyint(-128.f - mn * inv))));
          for (int64_t q = k0; q < k1; ++q) {
            const float v = std::nearbyint(wr[q] * inv) + float(z);
            row[q] = int8_t(std::fmin(127.f, std::fmax(-128.f, v)));
            local_m128 |= row[q] == -128;
          }
          sc[g] = s;
          zp[g] = z;
        }
      }
      pack_row(p, j, row.data(), sc.data(), opt.asymmetric ? zp.data() : nullptr);
    }
    if (local_m128) m128.store(true);
  });
}

Error quantize_weight(const float* w, int64_t n, int64_t k, const QuantizeOptions& opt,
                      std::unique_ptr<PackedWeight>* out) {
  std::unique_ptr<PackedWeight> pw;
  Error e = PackedWeight::create(n, k, opt.group, true, opt.asymmetric, &pw);
  if (!e.ok()) return e;
  std::atomic<bool> m128{false};
  quantize_rows_into(pw->p_, w, 0, n, opt, m128);
  pw->p_.has_m128 = m128.load();
  *out = std::move(pw);
  return Error{};
}

Error quantize_weight_stream(int64_t n, int64_t k, const QuantizeOptions& opt,
                             const std::function<Error(float* rows, int64_t r0, int64_t r1)>& fill,
                             std::unique_ptr<PackedWeight>* out) {
  std::unique_ptr<PackedWeight> pw;
  Error e = PackedWeight::create(n, k, opt.group, true, opt.asymmetric, &pw);
  if (!e.ok()) return e;
  const int64_t chunk = std::max<int64_t>(16, ((int64_t(8) << 20) / (k * 4)) / 16 * 16);
  std::vector<float> buf;
  try {
    buf.resize(size_t(std::min(chunk, n) * k));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "quantize: out of memory");
  }
  std::atomic<bool> m128{false};
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t r1 = std::min(n, r0 + chunk);
    if (Error fe = fill(buf.data(), r0, r1); !fe.ok()) return fe;
    quantize_rows_into(pw->p_, buf.data(), r0, r1, opt, m128);
  }
  pw->p_.has_m128 = m128.load();
  *out = std::move(pw);
  return Error{};
}

void dequantize_weight(const PackedS8& p, float* out) {
  const int64_t ksteps = p.k_pad / kS8StepK;
  parallel_for((p.n + 15) / 16, [&](int64_t t) {
    for (int64_t j = t * 16; j < std::min(p.n, t * 16 + 16); ++j) {
      const int64_t nb = j / kS8BlockN, jj = j % kS8BlockN;
      const int8_t* blk = p.data + nb * ksteps * kS8BlockBytes + jj * kS8StepK;
      for (int64_t kk = 0; kk < p.k; ++kk) {
        const int64_t idx = s8_group_index(nb, p.groups == 1 ? 0 : kk / p.group, p.groups) + jj;
        const float s = p.scales ? p.scales[idx] : 1.f;
        const int32_t z = p.zeros ? p.zeros[idx] : 0;
        out[j * p.k + kk] = s * float(int32_t(blk[(kk / 4) * kS8BlockBytes + (kk % 4)]) - z);
      }
    }
  });
}

// --- drivers --------------------------------------------------------------------
// Splits rows x 16-column blocks into pool tasks. Decode shapes (m <= 8) split
// columns only, so each weight byte is read once; larger m tiles both ways,
// starting from the ISA's preferred task size and halving it until there are
// enough tasks to keep every thread busy.
static void run_gemm_s8(const KernelTable& t, GemmS8Fn fn, const GemmS8Args& args) {
  const int64_t nblocks = s8_blocks(*args.b);  // blocks holding a column < n, never the padding past them
  const int64_t threads = num_threads();
  if (args.m <= 8) {
    // at least ~32K multiply-adds per task: tiny decode GEMVs (small models)
    // are cheaper on the calling thread than through a pool wake-up
    const int64_t min_blocks = (int64_t(1) << 15) / std::max<int64_t>(1, args.m * args.b->k_pad * kS8BlockN) + 1;
    const int64_t per = std::max<int64_t>(min_blocks, nblocks / (threads * 8));
    const int64_t tasks = (nblocks + per - 1) / per;
    parallel_for(tasks, [&](int64_t i) { fn(args, 0, args.m, i * per, std::min(nblocks, i * per + per)); });
    return;
  }
  int64_t mc = t.gemm_s8_task_rows, nc = t.gemm_s8_task_blocks;
  auto count = [&] { return ((args.m + mc - 1) / mc) * ((nblocks + nc - 1) / nc); };
  while (count() < 4 * threads && (nc > 1 || mc > 16)) {
    if (nc > 1) nc = (nc + 1) / 2;
    else mc /= 2;
  }
  const int64_t mt = (args.m + mc - 1) / mc, nt = (nblocks + nc - 1) / nc;
  parallel_for(mt * nt, [&](int64_t i) {
    const int64_t im = i % mt, in = i / mt;
    fn(args, im * mc, std::min(args.m, im * mc + mc), in * nc, std::min(nblocks, in * nc + nc));
  });
}

void quantize_activations(const KernelTable& t, const float* x, int64_t m, int64_t k, int64_t ldo, bool shift128, void* out,
                          float* scale) {
  QuantRowsArgs q;
  q.x = x;
  q.ldx = k;
  q.m = m;
  q.k = k;
  q.k_pad = ldo;
  q.out = static_cast<uint8_t*>(out);
  q.ldo = ldo;
  q.scale = scale;
  q.shift128 = shift128;
  if (m <= 8) t.quant_rows(q, 0, m);
  else parallel_for((m + 7) / 8, [&](int64_t i) { t.quant_rows(q, i * 8, std::min(m, i * 8 + 8)); });
}

void run_linear_s8(const KernelTable& t, const uint8_t* a, const float* a_scale, int64_t m, const PackedS8& b, const float* bias,
                   float* c, int64_t ldc, const float* a_gscale, const int32_t* a_gsum) {
  GemmS8Args args;
  args.a = a;
  args.a_gscale = a_gscale;
  args.a_gsum = a_gsum;
  args.lda = b.k_pad;
  args.m = m;
  args.b = &b;
  args.a_scale = a_scale;
  args.bias = bias;
  args.c = c;
  args.ldc = ldc;
  args.a_has_m128 = false;  // activations are clamped to [-127, 127]
  run_gemm_s8(t, t.gemm_s8, args);
}

static std::atomic<int64_t> g_strip_bytes{0};

void set_expand_strip_bytes(int64_t bytes) { g_strip_bytes.store(bytes > 0 ? bytes : 0, std::memory_order_relaxed); }

#define SPARQ_TRY_E(expr) do { Error e_ = (expr); if (!e_.ok()) return e_; } while (0)

namespace {

struct ExpandScratch {
  std::vector<std::unique_ptr<PackedWeight>> strips;  // packed strips by (rows, k, group), the newest last
  std::vector<float> row_scales, off_panels, xs, gscale;
  std::vector<int32_t> gsum;
  std::vector<uint8_t> xq;
  std::vector<char> acts;
};

ScratchCache<ExpandScratch>& expand_scratch() {
  static auto* cache = new ScratchCache<ExpandScratch>();  // never destroyed: pool threads may outlive statics
  return *cache;
}

// linear_s8_expanded and linear_s8_expanded_blocks: act > 0 quantizes the
// activations per block of act values (32 or 256; group 16 or 32) with one scale per (row, group)
// handed to the kernels, and adds the weights' f32 offsets (when `offsets`)
// as sum_g offset[j, g] * scale[i, g] * sum of the group's int8 activations: an
// f32 GEMM per strip that adds into the strip's output, with the offsets written
// as its B panels (16 rows x groups, the layout of the group scales).
Error expanded_impl(int64_t n, int64_t k, int64_t group, const ExpandBlockRowFn& expand, int64_t act, bool offsets,
                    const float* x, int64_t m, const float* bias, float* y, const Pack16Fn& pack16, int lo, int hi) {
  if (pack16 && n % kS8BlockN) return Error::make(Status::invalid_argument, "int8 linear: whole-block packing needs n % 16 == 0");
  const bool block_acts = act > 0;
  const KernelTable t = kernels();
  // strips of about 1 MiB of weights (set_expand_strip_bytes), whole 16-column blocks
  const int64_t set_bytes = g_strip_bytes.load(std::memory_order_relaxed);
  const int64_t strip_bytes = set_bytes ? set_bytes : int64_t(1) << 20;
  const int64_t strip = std::min(round_up(n, kS8BlockN), std::max<int64_t>(kS8BlockN, (strip_bytes / k) / kS8BlockN * kS8BlockN));
  if (block_acts && ((act != 32 && act != 256) || k % act || (group != 16 && group != 32)))
    return Error::make(Status::invalid_argument, "int8 linear: per-block activations need blocks of 32 or 256 dividing k and groups of 16 or 32");
  // Scratch leased for the call and reused across calls (grown, never shrunk): a
  // fresh ~1 MiB strip, zeroed and page-faulted in on every call, cost more than
  // the expansion itself. The packed strips are kept per (rows, k, group), so a
  // model's linears of different widths do not re-create them in turn.
  ScratchCache<ExpandScratch>::Lease lease = expand_scratch().take();
  if (!lease) return Error::make(Status::out_of_memory, "int8 linear: out of memory");
  ExpandScratch& sc_ = *lease;
  PackedWeight* pw = nullptr;
  for (const auto& s : sc_.strips)
    if (s->view().n == strip && s->view().k == k && s->user_group() == group) pw = s.get();
  if (!pw) {
    std::unique_ptr<PackedWeight> fresh;
    if (Error e = PackedWeight::create(strip, k, group, true, false, &fresh); !e.ok()) return e;
    try {
      if (sc_.strips.size() >= 4) sc_.strips.erase(sc_.strips.begin());
      sc_.strips.push_back(std::move(fresh));
    } catch (const std::bad_alloc&) {
      return Error::make(Status::out_of_memory, "int8 linear: out of memory");
    }
    pw = sc_.strips.back().get();
  }
  const PackedS8& p = pw->p_;
  const int64_t k_pad = p.k_pad, ksteps = k_pad / kS8StepK, groups = p.groups;
  auto grow = [](auto& v, int64_t size) {
    if (int64_t(v.size()) < size) v.resize(size_t(size));
  };
  // values known to lie in [lo, hi] with lo < 0: the kernels may shift them by -lo
  // and take -lo x each group's activation sum back
  const bool with_gsum = lo < hi && lo < 0;
  std::vector<float>&row_scales = sc_.row_scales, &off_panels = sc_.off_panels, &xs = sc_.xs, &gscale = sc_.gscale;
  std::vector<uint8_t>& xq = sc_.xq;
  try {
    grow(row_scales, 2 * strip * groups);  // each row's scales and offsets as expand writes them
    if (offsets) grow(off_panels, strip * groups);
    grow(xq, m * k_pad);
    grow(xs, m);
    if (block_acts && group != act) grow(gscale, m * groups);
    if (with_gsum) grow(sc_.gsum, m * groups);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "int8 linear: out of memory");
  }
  const float* a_gscale = nullptr;
  const float* gso_p = nullptr;  // block activations: scale x int sum per (row, group)
  if (!block_acts) {
    // activations quantized once for every strip, as linear_s8 does
    quantize_activations(t, x, m, k, k_pad, t.gemm_s8_a_u8, xq.data(), xs.data());
    if (with_gsum) {
      const int bias = t.gemm_s8_a_u8 ? 128 : 0;  // u8 activations hold q + 128
      parallel_for((m + 7) / 8, [&](int64_t c) {
        for (int64_t i = c * 8; i < std::min(m, c * 8 + 8); ++i)
          for (int64_t g = 0; g < groups; ++g) {
            int32_t sum = 0;
            for (int64_t q = g * p.group; q < std::min(k_pad, (g + 1) * p.group); ++q)
              sum += (bias ? int32_t(xq[size_t(i * k_pad + q)]) : int32_t(int8_t(xq[size_t(i * k_pad + q)]))) - bias;
            sc_.gsum[size_t(i * groups + g)] = sum;
          }
      });
    }
  } else {
    std::vector<char>& mem = sc_.acts;
    try {
      grow(mem, int64_t(block_acts_bytes(m, k, act)) + 64);
    } catch (const std::bad_alloc&) {
      return Error::make(Status::out_of_memory, "int8 linear: out of memory");
    }
    const BlockActsOut o = block_acts_layout(reinterpret_cast<void*>(round_up(int64_t(reinterpret_cast<uintptr_t>(mem.data())), 64)), m, k, act);
    // the kernels' activation scales per (row, group) are the block scales themselves when
    // group == act ([m, k / act]), else each repeated (act / group times); the offsets' f32
    // product reads the scaled group sums in place (so per 16, so32 per 32: [m, groups])
    const bool same = group == act;
    gso_p = group == 32 ? o.so32 : o.so;
    const uint64_t flip = t.gemm_s8_a_u8 ? 0x8080808080808080ull : 0;  // int8 q + 128 = q ^ 0x80, a byte at a time
    parallel_for((m + 7) / 8, [&](int64_t c) {
      const int64_t i0 = c * 8, i1 = std::min(m, i0 + 8);
      const BlockActsOut oi{o.q + i0 * k, o.s + i0 * (k / act), o.so + i0 * (k / 16), o.so32 + i0 * (k / 32)};
      t.block_quant(x + i0 * k, i1 - i0, k, act, oi);
      for (int64_t i = i0; i < i1; ++i) {
        uint8_t* dst = xq.data() + i * k_pad;
        const int8_t* src = o.q + i * k;
        int64_t c2 = 0;
        for (uint64_t w; c2 + 8 <= k; c2 += 8) {
          std::memcpy(&w, src + c2, 8);
          w ^= flip;
          std::memcpy(dst + c2, &w, 8);
        }
        for (; c2 < k; ++c2) dst[c2] = uint8_t(uint8_t(src[c2]) ^ uint8_t(flip));
        std::memset(dst + k, int(flip & 0xff), size_t(k_pad - k));
        if (with_gsum)
          for (int64_t g = 0; g < groups; ++g) {
            int32_t sum = 0;
            for (int64_t c3 = g * group; c3 < (g + 1) * group; ++c3) sum += src[c3];
            sc_.gsum[size_t(i * groups + g)] = sum;
          }
        if (!same)
          for (int64_t g = 0; g < groups; ++g) gscale[size_t(i * groups + g)] = o.s[i * (k / act) + g * group / act];
        // one group: the per-row path takes the scale
        xs[size_t(i)] = groups == 1 ? o.s[i * (k / act)] : 1.f;
      }
    });
    if (groups > 1) a_gscale = same ? o.s : gscale.data();
  }
  for (int64_t r0 = 0; r0 < n; r0 += strip) {
    const int64_t nr = std::min(strip, n - r0);
    // The strip as a weight of its own: nr rows (the last strip may be shorter), n_pad to match,
    // so the driver and the kernels see only the blocks that hold its columns.
    PackedS8 v = p;
    v.n = nr;
    v.lo = int16_t(lo < hi ? lo : 0);
    v.hi = int16_t(lo < hi ? hi : 0);
    v.n_pad = round_up(nr, kS8BlockN);
    std::atomic<bool> m128{false};
    // rows expanded 16 at a time, then packed (blocks of 16 columns, 4 k-bytes per
    // step) with their group sums, scales (and offsets, as B panels of the f32 GEMM)
    std::atomic<bool> oom{false};
    parallel_for(v.n_pad / kS8BlockN, [&](int64_t nb) {
      if (pack16) {
        if (pack16(r0 + nb * kS8BlockN, k_pad, p.data + nb * ksteps * kS8BlockBytes, p.colsum + s8_group_index(nb, 0, groups),
                   p.scales + s8_group_index(nb, 0, groups), offsets ? off_panels.data() + s8_group_index(nb, 0, groups) : nullptr))
          m128.store(true);
        return;
      }
      // 16 rows at a time in the pool thread's own buffer (L1 / L2 sized, reused)
      thread_local std::vector<int8_t> rows16;
      try {
        grow(rows16, kS8BlockN * k_pad);
      } catch (const std::bad_alloc&) {
        oom.store(true);
        return;
      }
      int8_t* rb = rows16.data();
      for (int64_t jj = 0; jj < kS8BlockN; ++jj) {
        const int64_t j = nb * kS8BlockN + jj;
        int8_t* row = rb + jj * k_pad;
        float* sc = row_scales.data() + 2 * j * groups;
        float* off = sc + groups;
        if (j < nr) {
          expand(r0 + j, row, sc, offsets ? off : nullptr);
          std::memset(row + k, 0, size_t(k_pad - k));
        } else {
          std::memset(row, 0, size_t(k_pad));
          std::fill(sc, sc + 2 * groups, 0.f);
        }
        for (int64_t g = 0; g < groups; ++g) p.scales[s8_group_index(nb, g, groups) + jj] = sc[g];
        if (offsets)
          for (int64_t g = 0; g < groups; ++g) off_panels[size_t(s8_group_index(nb, g, groups) + jj)] = off[g];
      }
      if (t.pack_s8_block(rb, k_pad, k_pad, p.group, groups, p.data + nb * ksteps * kS8BlockBytes,
                          p.colsum + s8_group_index(nb, 0, groups)))
        m128.store(true);
    });
    if (oom.load()) return Error::make(Status::out_of_memory, "int8 linear: out of memory");
    v.has_m128 = m128.load();
    run_linear_s8(t, xq.data(), xs.data(), m, v, bias ? bias + r0 : nullptr, y + r0, n, a_gscale, with_gsum ? sc_.gsum.data() : nullptr);
    if (offsets) {
      // y[:, strip] += (scale * group sums of x) [m, groups] . offsets^T [groups, nr]
      SgemmArgs f;
      f.a = gso_p;
      f.lda = groups;
      f.bp = off_panels.data();
      f.m = m;
      f.n = nr;
      f.k = groups;
      f.c = y + r0;
      f.ldc = n;
      f.accumulate = true;
      run_sgemm(t.sgemm, f);
    }
  }
  return Error{};
}

}  // namespace

Error linear_s8_expanded(int64_t n, int64_t k, int64_t group, const ExpandRowFn& expand, const float* x, int64_t m,
                         const float* bias, float* y, int lo, int hi) {
  return expanded_impl(n, k, group, [&](int64_t j, int8_t* row, float* sc, float*) { expand(j, row, sc); }, 0, false, x, m, bias, y,
                       nullptr, lo, hi);
}

Error linear_s8_expanded_blocks(int64_t n, int64_t k, int64_t group, int64_t act, const ExpandBlockRowFn& expand, bool offsets,
                                const float* x, int64_t m, float* y, const Pack16Fn& pack16, int lo, int hi) {
  return expanded_impl(n, k, group, expand, act, offsets, x, m, nullptr, y, pack16, lo, hi);
}

// The quantized activations (and their scales, row sums) of one call, in leased
// scratch (scratch.h): a fresh allocation per call was page-faulted in every time.
struct ScratchA {
  uint8_t* a = nullptr;
  float* scale = nullptr;
  int32_t* rowsum = nullptr;
};

Error matmul_s8(const int8_t* a, int64_t m, int64_t k, const PackedS8& b, int32_t* c) {
  if (k != b.k) return Error::make(Status::invalid_argument, "matmul_s8: k mismatch");
  if (k > 131071) return Error::make(Status::invalid_argument, "matmul_s8: k must be at most 131071 for exact int32 sums");
  if (b.groups != 1 || b.scales) return Error::make(Status::invalid_argument, "matmul_s8: B must be raw per-channel int8");
  const KernelTable t = kernels();
  ScratchA s;
  ScratchCache<ByteScratch>::Lease mem = byte_scratch().take();
  if (!mem || !mem->carve({{size_t(m * b.k_pad), reinterpret_cast<void**>(&s.a)}}))
    return Error::make(Status::out_of_memory, "matmul_s8: out of memory");
  const bool a_m128 = any_m128(a, m * k);
  const bool use_ref = t.gemm_s8_sign_trick && a_m128 && b.has_m128;
  const bool shift = t.gemm_s8_a_u8 && !use_ref;
  parallel_for((m + 31) / 32, [&](int64_t tt) {
    for (int64_t i = tt * 32; i < std::min(m, tt * 32 + 32); ++i) {
      uint8_t* dst = s.a + i * b.k_pad;
      const int8_t* src = a + i * k;
      if (shift)
        for (int64_t q = 0; q < k; ++q) dst[q] = uint8_t(src[q]) ^ 0x80;
      else
        std::memcpy(dst, src, size_t(k));
      std::memset(dst + k, shift ? 0x80 : 0, size_t(b.k_pad - k));
    }
  });
  GemmS8Args args;
  args.a = s.a;
  args.lda = b.k_pad;
  args.m = m;
  args.b = &b;
  args.ci = c;
  args.ldc = b.n;
  args.a_has_m128 = a_m128;
  run_gemm_s8(t, use_ref ? gemm_s8_ref : t.gemm_s8, args);
  return Error{};
}

Error linear_s8(const float* x, int64_t m, int64_t k, const PackedS8& b, const float* bias, float static_scale,
                float* y) {
  if (k != b.k) return Error::make(Status::invalid_argument, "linear_s8: k mismatch");
  if (!b.scales) return Error::make(Status::invalid_argument, "linear_s8: weight has no scales");
  if ((b.groups == 1 ? b.k : b.group) > kS8MaxGroupK)
    return Error::make(Status::invalid_argument, "linear_s8: a scale group of more than " + std::to_string(kS8MaxGroupK) +
                                                     " values could overflow the exact int32 sums; use a smaller group");
  const KernelTable t = kernels();
  ScratchA s;
  ScratchCache<ByteScratch>::Lease mem = byte_scratch().take();
  if (!mem || !mem->carve({{size_t(m * b.k_pad), reinterpret_cast<void**>(&s.a)},
                           {size_t(m) * 4, reinterpret_cast<void**>(&s.scale)},
                           {b.zeros ? size_t(m * b.groups) * 4 : 0, reinterpret_cast<void**>(&s.rowsum)}}))
    return Error::make(Status::out_of_memory, "linear_s8: out of memory");
  if (!b.zeros) s.rowsum = nullptr;
  QuantRowsArgs q;
  q.x = x;
  q.ldx = k;
  q.m = m;
  q.k = k;
  q.k_pad = b.k_pad;
  q.out = s.a;
  q.ldo = b.k_pad;
  q.scale = s.scale;
  q.rowsum = s.rowsum;
  q.group = b.group;
  q.groups = b.groups;
  q.static_scale = static_scale;
  q.shift128 = t.gemm_s8_a_u8;
  parallel_for((m + 7) / 8, [&](int64_t tt) { t.quant_rows(q, tt * 8, std::min(m, tt * 8 + 8)); });
  GemmS8Args args;
  args.a = s.a;
  args.lda = b.k_pad;
  args.m = m;
  args.b = &b;
  args.a_scale = s.scale;
  args.bias = bias;
  args.c = y;
  args.ldc = b.n;
  args.a_has_m128 = false;  // activations are clamped to [-127, 127]
  run_gemm_s8(t, t.gemm_s8, args);
  if (b.zeros) {
    // acc_g used raw q; the true sum is acc_g - zero[j,g] * rowsum_g(A)
    parallel_for((m + 7) / 8, [&](int64_t tt) {
      for (int64_t i = tt * 8; i < std::min(m, tt * 8 + 8); ++i)
        for (int64_t j = 0; j < b.n; ++j) {
          const int64_t nb = j / kS8BlockN, jj = j % kS8BlockN;
          float corr = 0.f;
          for (int64_t g = 0; g < b.groups; ++g) {
            const int64_t idx = s8_group_index(nb, g, b.groups) + jj;
            corr += b.scales[idx] * float(b.zeros[idx]) * float(s.rowsum[i * b.groups + g]);
          }
          y[i * b.n + j] -= s.scale[i] * corr;
        }
    });
  }
  return Error{};
}

}  // namespace sparq
