// ceiling_avx2.cpp - machine ceilings for the benchmarks' "% of peak": AVX2
// fp32 FMA and int8 multiply-add throughput from in-register loops with
// independent chains, and DRAM read bandwidth from streaming loads.
#include <immintrin.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "../dispatch.h"
#include "ceiling.h"
#include "../thread_pool.h"
#include "sparq/sparq.h"

namespace sparq {
namespace {

using Clock = std::chrono::steady_clock;

__attribute__((noinline)) float fma_loop(int64_t iters) {
  __m256 a[10];
  for (int i = 0; i < 10; ++i) a[i] = _mm256_set1_ps(0.001f * float(i));
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.0001f);
  for (int64_t t = 0; t < iters; ++t)
    for (int i = 0; i < 10; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  __m256 s = a[0];
  for (int i = 1; i < 10; ++i) s = _mm256_add_ps(s, a[i]);
  return _mm256_cvtss_f32(s);
}

// 8 independent vpmaddubsw -> vpaddw chains on distinct operand pairs: the int8
// multiply pipe's own rate (32 products a vpmaddubsw), which kernels that add
// several vpmaddubsw results in int16 before one vpmaddwd approach (the block
// GEMVs; a vpmaddwd per vpmaddubsw, as the int8 GEMM's tile does, runs on the
// same pipe: at half this on CPUs with one, e.g. Zen 1). The empty asm makes the
// operands opaque each iteration so the compiler cannot hoist the multiplies.
__attribute__((noinline)) int i8_loop(int64_t iters) {
  __m256i acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_set1_epi16(int16_t(i));
  __m256i a0 = _mm256_set1_epi8(3), a1 = _mm256_set1_epi8(5), a2 = _mm256_set1_epi8(7), a3 = _mm256_set1_epi8(11);
  __m256i b0 = _mm256_set1_epi8(-2), b1 = _mm256_set1_epi8(9);
  for (int64_t t = 0; t < iters; ++t) {
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(b0), "+x"(b1));
    acc[0] = _mm256_add_epi16(acc[0], _mm256_maddubs_epi16(a0, b0));
    acc[1] = _mm256_add_epi16(acc[1], _mm256_maddubs_epi16(a1, b0));
    acc[2] = _mm256_add_epi16(acc[2], _mm256_maddubs_epi16(a2, b0));
    acc[3] = _mm256_add_epi16(acc[3], _mm256_maddubs_epi16(a3, b0));
    acc[4] = _mm256_add_epi16(acc[4], _mm256_maddubs_epi16(a0, b1));
    acc[5] = _mm256_add_epi16(acc[5], _mm256_maddubs_epi16(a1, b1));
    acc[6] = _mm256_add_epi16(acc[6], _mm256_maddubs_epi16(a2, b1));
    acc[7] = _mm256_add_epi16(acc[7], _mm256_maddubs_epi16(a3, b1));
  }
  __m256i s = acc[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi16(s, acc[i]);
  return _mm256_extract_epi16(s, 0);
}
// Four concurrent sequential streams (the quarters of the buffer), so one core
// keeps enough cache misses in flight to approach its share of DRAM bandwidth.
__attribute__((noinline)) int64_t read_loop(const char* p, size_t bytes) {
  const size_t q = (bytes / 4) & ~size_t(63);
  const char* s[4] = {p, p + q, p + 2 * q, p + 3 * q};
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 64 <= q; i += 64) {
    a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(s[0] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(s[0] + i + 32))));
    a1 = _mm256_add_epi64(a1, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(s[1] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(s[1] + i + 32))));
    a2 = _mm256_add_epi64(a2, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(s[2] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(s[2] + i + 32))));
    a3 = _mm256_add_epi64(a3, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(s[3] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(s[3] + i + 32))));
  }
  a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  return _mm256_extract_epi64(a0, 0);
}

// Runs body(thread) on every pool thread at once; returns the best of 3 wall times.
template <class F>
double timed(int threads, F body) {
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    parallel_for(threads, [&](int64_t t) { body(t); });
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

volatile float g_sink_f;
volatile int64_t g_sink_i;

}  // namespace

Ceilings measure_ceilings(int64_t dram_bytes) {
  Ceilings c;
  c.threads = num_threads();
  if (!isa_supported(Isa::avx2)) return c;
  const int th = c.threads;
  const int64_t iters = 20000000;
  double s = timed(th, [&](int64_t) { g_sink_f = fma_loop(iters); });
  c.fp32_avx2_gops = double(th) * double(iters) * 10 * 8 * 2 / s / 1e9;
  s = timed(th, [&](int64_t) { g_sink_i = i8_loop(iters); });
  c.int8_avx2_gops = double(th) * double(iters) * 8 * 32 * 2 / s / 1e9;
  // the wider units, on the CPU itself only (an emulated path has no ceiling)
  const auto hw = [](Isa isa) { return isa_supported(isa) && !isa_emulated(isa); };
  if (hw(Isa::avxvnni)) {
    s = timed(th, [&](int64_t) { g_sink_i = ceiling_vnni256_loop(iters); });
    c.int8_avxvnni_gops = double(th) * double(iters) * 12 * 32 * 2 / s / 1e9;
  }
  if (hw(Isa::avx512vnni)) {
    s = timed(th, [&](int64_t) { g_sink_f = ceiling_fma512_loop(iters); });
    c.fp32_avx512_gops = double(th) * double(iters) * 12 * 16 * 2 / s / 1e9;
    s = timed(th, [&](int64_t) { g_sink_i = ceiling_vnni512_loop(iters); });
    c.int8_avx512vnni_gops = double(th) * double(iters) * 12 * 64 * 2 / s / 1e9;
  }
  if (dram_bytes > 0) {
    const size_t per = size_t(dram_bytes / th) & ~size_t(127);
    std::vector<char*> bufs(size_t(th), nullptr);
    bool ok = true;
    for (auto& b : bufs) {
      b = static_cast<char*>(aligned_malloc(per));
      if (!b) { ok = false; break; }
      std::memset(b, 1, per);
    }
    if (ok) {
      s = timed(th, [&](int64_t t) { g_sink_i = read_loop(bufs[size_t(t)], per); });
      c.dram_read_gbs = double((per / 4) & ~size_t(63)) * 4 * th / s / 1e9;
    }
    for (auto* b : bufs) aligned_free(b);
  }
  return c;
}

}  // namespace sparq
