// emu_avx512_amx.h - test-only emulation of the AVX-512 and AMX intrinsics used by
// sparq's int8 and f32 kernels, so their logic (indexing, tails, masks, groups, tile
// shapes) runs and is checked on CPUs without those ISAs. Force-included
// (-include) before a kernel file by the emulated core (CMake sparq_core_emu,
// native/test/emu/*_emu.cpp); see test_ops.cpp and test_emulated_isa.cpp. It
// checks the source against the reference, not the real instructions.
#pragma once
#define SPARQ_EMULATED_ISA 1
#include <immintrin.h>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace emu {
struct alignas(64) V {
  union { int32_t i[16]; uint32_t u[16]; float f[16]; uint8_t u8[64]; int8_t s8[64]; };
};
inline V vi(__m512i x) { V v; std::memcpy(&v, &x, 64); return v; }
inline V vf(__m512 x) { V v; std::memcpy(&v, &x, 64); return v; }
inline __m512i toi(const V& v) { __m512i x; std::memcpy(&x, &v, 64); return x; }
inline __m512 tof(const V& v) { __m512 x; std::memcpy(&x, &v, 64); return x; }
inline void need_align(const void* p, unsigned a, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % a) { std::fprintf(stderr, "misaligned %s %p\n", what, p); std::abort(); }
}
inline __m512 add_ps(__m512 a, __m512 b) { V x = vf(a), y = vf(b); for (int l = 0; l < 16; ++l) x.f[l] = x.f[l] + y.f[l]; return tof(x); }
inline __m512 mul_ps(__m512 a, __m512 b) { V x = vf(a), y = vf(b); for (int l = 0; l < 16; ++l) x.f[l] = x.f[l] * y.f[l]; return tof(x); }
inline __m512 maskz_cvtepi32_ps(__mmask16 k, __m512i a) { V x = vi(a), r; for (int l = 0; l < 16; ++l) r.f[l] = (k >> l & 1) ? float(x.i[l]) : 0.f; return tof(r); }
inline __m512i dpbusd(__m512i s, __m512i a, __m512i b) {
  V x = vi(s), ua = vi(a), sb = vi(b);
  for (int l = 0; l < 16; ++l) {
    uint32_t acc = x.u[l];
    for (int t = 0; t < 4; ++t) acc += uint32_t(int32_t(ua.u8[4 * l + t]) * int32_t(sb.s8[4 * l + t]));
    x.u[l] = acc;
  }
  return toi(x);
}
inline __m512 load_ps(const void* p) { need_align(p, 64, "load_ps"); V v; std::memcpy(&v, p, 64); return tof(v); }
inline __m512i load_si512(const void* p) { need_align(p, 64, "load_si512"); V v; std::memcpy(&v, p, 64); return toi(v); }
inline __m512 loadu_ps(const void* p) { V v; std::memcpy(&v, p, 64); return tof(v); }
inline __m512i loadu_si512(const void* p) { V v; std::memcpy(&v, p, 64); return toi(v); }
inline void mask_storeu_epi32(void* p, __mmask16 k, __m512i a) { V v = vi(a); for (int l = 0; l < 16; ++l) if (k >> l & 1) std::memcpy(static_cast<char*>(p) + 4 * l, &v.i[l], 4); }
inline void mask_storeu_ps(void* p, __mmask16 k, __m512 a) { V v = vf(a); for (int l = 0; l < 16; ++l) if (k >> l & 1) std::memcpy(static_cast<char*>(p) + 4 * l, &v.f[l], 4); }
inline __m512 maskz_loadu_ps(__mmask16 k, const void* p) { V v; for (int l = 0; l < 16; ++l) { v.f[l] = 0.f; if (k >> l & 1) std::memcpy(&v.f[l], static_cast<const char*>(p) + 4 * l, 4); } return tof(v); }
inline __m512i mullo_epi32(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 16; ++l) x.u[l] = x.u[l] * y.u[l]; return toi(x); }
inline __m512i set1_epi32(int a) { V v; for (int l = 0; l < 16; ++l) v.i[l] = a; return toi(v); }
inline __m512i set1_epi8(char a) { V v; for (int l = 0; l < 64; ++l) v.s8[l] = int8_t(a); return toi(v); }
inline __m512 set1_ps(float a) { V v; for (int l = 0; l < 16; ++l) v.f[l] = a; return tof(v); }
inline __m512 setzero_ps() { V v; for (int l = 0; l < 16; ++l) v.f[l] = 0.f; return tof(v); }
inline __m512i setzero_si512() { V v; for (int l = 0; l < 16; ++l) v.i[l] = 0; return toi(v); }
inline void store_ps(void* p, __m512 a) { need_align(p, 64, "store_ps"); V v = vf(a); std::memcpy(p, &v, 64); }
inline void store_si512(void* p, __m512i a) { need_align(p, 64, "store_si512"); V v = vi(a); std::memcpy(p, &v, 64); }
inline __m512 fmadd_ps(__m512 a, __m512 b, __m512 c) { V x = vf(a), y = vf(b), z = vf(c); for (int l = 0; l < 16; ++l) x.f[l] = std::fma(x.f[l], y.f[l], z.f[l]); return tof(x); }
inline __m256 extractf32x8_ps(__m512 a, int i) { V x = vf(a); __m256 r; std::memcpy(&r, &x.f[i ? 8 : 0], 32); return r; }
inline __m128 maskz_loadu_ps128(__mmask8 k, const void* p) { float t[4]; for (int l = 0; l < 4; ++l) { t[l] = 0.f; if (k >> l & 1) std::memcpy(&t[l], static_cast<const char*>(p) + 4 * l, 4); } __m128 r; std::memcpy(&r, t, 16); return r; }
inline void mask_storeu_ps128(void* p, __mmask8 k, __m128 a) { float t[4]; std::memcpy(t, &a, 16); for (int l = 0; l < 4; ++l) if (k >> l & 1) std::memcpy(static_cast<char*>(p) + 4 * l, &t[l], 4); }
inline __m512 sub_ps(__m512 a, __m512 b) { V x = vf(a), y = vf(b); for (int l = 0; l < 16; ++l) x.f[l] = x.f[l] - y.f[l]; return tof(x); }
inline __m512 max_ps(__m512 a, __m512 b) { V x = vf(a), y = vf(b); for (int l = 0; l < 16; ++l) x.f[l] = x.f[l] > y.f[l] ? x.f[l] : y.f[l]; return tof(x); }
inline __m512 min_ps(__m512 a, __m512 b) { V x = vf(a), y = vf(b); for (int l = 0; l < 16; ++l) x.f[l] = x.f[l] < y.f[l] ? x.f[l] : y.f[l]; return tof(x); }
inline __m512 fnmadd_ps(__m512 a, __m512 b, __m512 c) { V x = vf(a), y = vf(b), z = vf(c); for (int l = 0; l < 16; ++l) x.f[l] = std::fma(-x.f[l], y.f[l], z.f[l]); return tof(x); }
inline void storeu_ps(void* p, __m512 a) { V v = vf(a); std::memcpy(p, &v, 64); }
inline __mmask16 cmp_ps_mask(__m512 a, __m512 b, int pred) {
  V x = vf(a), y = vf(b);
  __mmask16 k = 0;
  for (int l = 0; l < 16; ++l) {
    const float p = x.f[l], q = y.f[l];
    bool r = false;
    switch (pred) {
      case _CMP_LT_OQ: r = p < q; break;
      case _CMP_GE_OQ: r = p >= q; break;
      case _CMP_EQ_OQ: r = p == q; break;
      default: std::fprintf(stderr, "emu: cmp predicate %d\n", pred); std::abort();
    }
    k = __mmask16(k | (r ? 1u << l : 0u));
  }
  return k;
}
inline __m512 mask_blend_ps(__mmask16 k, __m512 a, __m512 b) { V x = vf(a), y = vf(b); for (int l = 0; l < 16; ++l) if (k >> l & 1) x.f[l] = y.f[l]; return tof(x); }
inline __m512 maskz_mov_ps(__mmask16 k, __m512 a) { V x = vf(a); for (int l = 0; l < 16; ++l) if (!(k >> l & 1)) x.f[l] = 0.f; return tof(x); }
inline __m512 roundscale_ps(__m512 a, int imm) {
  if ((imm & 3) != _MM_FROUND_TO_NEAREST_INT) { std::fprintf(stderr, "emu: roundscale mode %d\n", imm); std::abort(); }
  V x = vf(a); for (int l = 0; l < 16; ++l) x.f[l] = std::nearbyint(x.f[l]); return tof(x);
}
inline __m512i cvtps_epi32(__m512 a) { V x = vf(a), r; for (int l = 0; l < 16; ++l) r.i[l] = int32_t(std::nearbyint(x.f[l])); return toi(r); }
inline __m512i add_epi32(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 16; ++l) x.u[l] += y.u[l]; return toi(x); }
inline __m512i slli_epi32(__m512i a, unsigned s) { V x = vi(a); for (int l = 0; l < 16; ++l) x.u[l] = s > 31 ? 0u : x.u[l] << s; return toi(x); }
inline __m512 castsi512_ps(__m512i a) { V x = vi(a); return tof(x); }
inline __m512i xor_si512(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 16; ++l) x.u[l] ^= y.u[l]; return toi(x); }

// the GGUF block GEMV (quants_avx512.cpp)
inline __m512i castsi256_si512(__m256i a) { V v{}; std::memcpy(&v, &a, 32); return toi(v); }
inline __m512i zextsi256_si512(__m256i a) { V v{}; std::memcpy(&v, &a, 32); return toi(v); }
inline __m512i inserti64x4(__m512i a, __m256i b, int i) { V v = vi(a); std::memcpy(&v.u8[i ? 32 : 0], &b, 32); return toi(v); }
inline __m512 castps256_ps512(__m256 a) { V v{}; std::memcpy(&v, &a, 32); return tof(v); }
inline __m512i shuffle_i64x2(__m512i a, __m512i b, int imm) {
  V x = vi(a), y = vi(b), r;
  for (int p = 0; p < 4; ++p) std::memcpy(&r.u8[16 * p], &(p < 2 ? x : y).u8[16 * ((imm >> (2 * p)) & 3)], 16);
  return toi(r);
}
inline __m512i and_si512(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 16; ++l) x.u[l] &= y.u[l]; return toi(x); }
inline __m512i or_si512(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 16; ++l) x.u[l] |= y.u[l]; return toi(x); }
// bit i of each result: bit (a_i << 2 | b_i << 1 | c_i) of imm
inline __m512i ternarylogic_epi32(__m512i a, __m512i b, __m512i c, int imm) {
  V x = vi(a), y = vi(b), z = vi(c), r;
  for (int l = 0; l < 16; ++l) {
    uint32_t v = 0;
    for (int i = 0; i < 32; ++i) v |= uint32_t(imm >> ((x.u[l] >> i & 1) << 2 | (y.u[l] >> i & 1) << 1 | (z.u[l] >> i & 1)) & 1) << i;
    r.u[l] = v;
  }
  return toi(r);
}
inline __m512i slli_epi16(__m512i a, unsigned s) {
  V x = vi(a); uint16_t h[32]; std::memcpy(h, &x, 64);
  for (int l = 0; l < 32; ++l) h[l] = s > 15 ? 0 : uint16_t(h[l] << s);
  std::memcpy(&x, h, 64); return toi(x);
}
inline __m512i srli_epi16(__m512i a, unsigned s) {
  V x = vi(a); uint16_t h[32]; std::memcpy(h, &x, 64);
  for (int l = 0; l < 32; ++l) h[l] = s > 15 ? 0 : uint16_t(h[l] >> s);
  std::memcpy(&x, h, 64); return toi(x);
}
inline __m512 cvtepi32_ps(__m512i a) { V x = vi(a), r; for (int l = 0; l < 16; ++l) r.f[l] = float(x.i[l]); return tof(r); }
inline __m512i srli_epi32(__m512i a, unsigned s) { V x = vi(a); for (int l = 0; l < 16; ++l) x.u[l] = s > 31 ? 0u : x.u[l] >> s; return toi(x); }
inline __m512i cvtepu8_epi32(__m128i a) { uint8_t b[16]; std::memcpy(b, &a, 16); V r; for (int l = 0; l < 16; ++l) r.i[l] = b[l]; return toi(r); }
inline __m512i cvtepi8_epi32(__m128i a) { int8_t b[16]; std::memcpy(b, &a, 16); V r; for (int l = 0; l < 16; ++l) r.i[l] = b[l]; return toi(r); }
inline __m512i cvtepi16_epi32(__m256i a) { int16_t h[16]; std::memcpy(h, &a, 32); V r; for (int l = 0; l < 16; ++l) r.i[l] = h[l]; return toi(r); }
inline __m512 permutexvar_ps(__m512i idx, __m512 a) { V i = vi(idx), x = vf(a), r; for (int l = 0; l < 16; ++l) r.f[l] = x.f[i.u[l] & 15]; return tof(r); }
inline float reduce_add_ps(__m512 a) {  // pairwise, as the compiler's sequence: halves, then quarters ...
  V x = vf(a); for (int w = 8; w >= 1; w /= 2) for (int l = 0; l < w; ++l) x.f[l] = x.f[l] + x.f[l + w]; return x.f[0];
}
inline __m512i abs_epi8(__m512i a) { V x = vi(a); for (int l = 0; l < 64; ++l) x.u8[l] = uint8_t(x.s8[l] < 0 ? -x.s8[l] : x.s8[l]); return toi(x); }
inline __mmask64 movepi8_mask(__m512i a) { V x = vi(a); __mmask64 k = 0; for (int l = 0; l < 64; ++l) if (x.s8[l] < 0) k |= __mmask64(1) << l; return k; }
inline __mmask64 cmpeq_epi8_mask(__m512i a, __m512i b) { V x = vi(a), y = vi(b); __mmask64 k = 0; for (int l = 0; l < 64; ++l) if (x.u8[l] == y.u8[l]) k |= __mmask64(1) << l; return k; }
inline __m512i srai_epi32(__m512i a, unsigned s) { V x = vi(a); for (int l = 0; l < 16; ++l) x.i[l] = x.i[l] >> (s > 31 ? 31 : s); return toi(x); }
inline __m512i sub_epi8(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 64; ++l) x.u8[l] = uint8_t(x.u8[l] - y.u8[l]); return toi(x); }
inline __m512i sub_epi32(__m512i a, __m512i b) { V x = vi(a), y = vi(b); for (int l = 0; l < 16; ++l) x.u[l] -= y.u[l]; return toi(x); }
inline void storeu_si512(void* p, __m512i a) { std::memcpy(p, &a, 64); }
inline __m512i mask_sub_epi8(__m512i src, __mmask64 k, __m512i a, __m512i b) {
  V r = vi(src), x = vi(a), y = vi(b);
  for (int l = 0; l < 64; ++l) if (k >> l & 1) r.u8[l] = uint8_t(x.u8[l] - y.u8[l]);
  return toi(r);
}

// --- AMX ---
struct Tile { int rows = 0, colsb = 0; uint8_t d[16][64]; };
struct TileState { bool configured = false; Tile t[8]; };
inline thread_local TileState ts;
// instruction counts over all threads (the emulated core runs the kernels in the pool)
inline std::atomic<long> g_tdp{0}, g_cfg{0};
inline long tdp_count() { return g_tdp.load(); }
inline long cfg_count() { return g_cfg.load(); }
inline void fail(const char* m) { std::fprintf(stderr, "AMX emu: %s\n", m); std::abort(); }
inline void loadconfig(const void* cfg) {
  const uint8_t* c = static_cast<const uint8_t*>(cfg);
  if (c[0] != 1) fail("palette != 1");
  for (int i = 2; i < 16; ++i) if (c[i]) fail("reserved bytes set");
  ++g_cfg;
  ts.configured = true;
  for (int t = 0; t < 8; ++t) {
    uint16_t colsb; std::memcpy(&colsb, c + 16 + 2 * t, 2);
    int rows = c[48 + t];
    if (colsb > 64 || rows > 16) fail("tile too big");
    if ((colsb == 0) != (rows == 0)) fail("half-configured tile");
    ts.t[t].rows = rows; ts.t[t].colsb = colsb;
    std::memset(ts.t[t].d, 0, sizeof ts.t[t].d);
  }
  for (int i = 48 + 8; i < 64; ++i) if (c[i]) fail("rows of tile >= 8 set");
  for (int i = 16 + 16; i < 48; ++i) if (c[i]) fail("colsb of tile >= 8 set");
}
inline Tile& tile(int t) { if (!ts.configured) fail("not configured"); if (t < 0 || t > 7 || !ts.t[t].rows) fail("unconfigured tile"); return ts.t[t]; }
inline void loadd(int t, const void* base, long stride) {
  Tile& x = tile(t);
  for (int r = 0; r < x.rows; ++r) std::memcpy(x.d[r], static_cast<const char*>(base) + r * stride, x.colsb);
}
inline void stored(int t, void* base, long stride) {
  Tile& x = tile(t);
  for (int r = 0; r < x.rows; ++r) std::memcpy(static_cast<char*>(base) + r * stride, x.d[r], x.colsb);
}
inline void zero(int t) { Tile& x = tile(t); std::memset(x.d, 0, sizeof x.d); }
inline void dpbssd(int c, int a, int b) {
  Tile &C = tile(c), &A = tile(a), &B = tile(b);
  if (C.rows != A.rows || C.colsb != B.colsb || A.colsb != B.rows * 4 || C.colsb % 4) fail("dpbssd shape mismatch");
  if (c == a || c == b || a == b) fail("dpbssd tile aliasing");
  ++g_tdp;
  for (int m = 0; m < C.rows; ++m)
    for (int n = 0; n < C.colsb / 4; ++n) {
      uint32_t acc; std::memcpy(&acc, &C.d[m][4 * n], 4);
      for (int k = 0; k < A.colsb / 4; ++k)
        for (int t = 0; t < 4; ++t) acc += uint32_t(int32_t(int8_t(A.d[m][4 * k + t])) * int32_t(int8_t(B.d[k][4 * n + t])));
      std::memcpy(&C.d[m][4 * n], &acc, 4);
    }
}
inline void release() { ts.configured = false; }
// VBMI2 expand: lane l takes the next packed byte when bit l is set
inline __m512i maskz_expandloadu_epi8(__mmask64 k, const void* p) {
  V v; const int8_t* s = static_cast<const int8_t*>(p); int c = 0;
  for (int l = 0; l < 64; ++l) v.s8[l] = (k >> l & 1) ? s[c++] : 0;
  return toi(v);
}
inline __m512i maskz_expand_epi8(__mmask64 k, __m512i a) {
  V v, x = vi(a); int c = 0;
  for (int l = 0; l < 64; ++l) v.s8[l] = (k >> l & 1) ? x.s8[c++] : 0;
  return toi(v);
}
inline __m512i shuffle_epi8(__m512i a, __m512i b) {  // vpshufb: within each 16-byte lane
  V x = vi(a), c = vi(b), r;
  for (int l = 0; l < 64; ++l) r.u8[l] = (c.u8[l] & 0x80) ? 0 : x.u8[(l & ~15) + (c.u8[l] & 15)];
  return toi(r);
}
inline __m512 cvtph_ps(__m256i h) {  // F16C, one half at a time
  V r;
  uint16_t u[16];
  std::memcpy(u, &h, 32);
  for (int l = 0; l < 16; ++l) r.f[l] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u[l])));
  return tof(r);
}
}  // namespace emu

#define _mm512_cvtph_ps emu::cvtph_ps
#define _mm512_add_ps emu::add_ps
#define _mm512_mul_ps emu::mul_ps
#define _mm512_maskz_cvtepi32_ps emu::maskz_cvtepi32_ps
#define _mm512_dpbusd_epi32 emu::dpbusd
#define _mm512_load_ps emu::load_ps
#define _mm512_load_si512 emu::load_si512
#define _mm512_loadu_ps emu::loadu_ps
#define _mm512_loadu_si512 emu::loadu_si512
#define _mm512_mask_storeu_epi32 emu::mask_storeu_epi32
#define _mm512_mask_storeu_ps emu::mask_storeu_ps
#define _mm512_maskz_loadu_ps emu::maskz_loadu_ps
#define _mm512_mullo_epi32 emu::mullo_epi32
#define _mm512_set1_epi32 emu::set1_epi32
#define _mm512_set1_epi8 emu::set1_epi8
#define _mm512_set1_ps emu::set1_ps
#define _mm512_setzero_ps emu::setzero_ps
#define _mm512_setzero_si512 emu::setzero_si512
#define _mm512_store_ps emu::store_ps
#define _mm512_store_si512 emu::store_si512
#define _mm512_xor_si512 emu::xor_si512
#define _mm512_maskz_expandloadu_epi8 emu::maskz_expandloadu_epi8
#define _mm512_maskz_expand_epi8 emu::maskz_expand_epi8
#define _mm512_shuffle_epi8 emu::shuffle_epi8
#define _mm512_sub_ps emu::sub_ps
#define _mm512_max_ps emu::max_ps
#define _mm512_min_ps emu::min_ps
#define _mm512_fnmadd_ps emu::fnmadd_ps
#define _mm512_storeu_ps emu::storeu_ps
#define _mm512_cmp_ps_mask emu::cmp_ps_mask
#define _mm512_mask_blend_ps emu::mask_blend_ps
#define _mm512_maskz_mov_ps emu::maskz_mov_ps
#define _mm512_roundscale_ps emu::roundscale_ps
#define _mm512_cvtps_epi32 emu::cvtps_epi32
#define _mm512_add_epi32 emu::add_epi32
#define _mm512_slli_epi32 emu::slli_epi32
#define _mm512_castsi512_ps emu::castsi512_ps
#define _mm512_fmadd_ps emu::fmadd_ps
#define _mm512_extractf32x8_ps emu::extractf32x8_ps
#define _mm_maskz_loadu_ps emu::maskz_loadu_ps128
#define _mm_mask_storeu_ps emu::mask_storeu_ps128
#define _mm512_castsi256_si512 emu::castsi256_si512
#define _mm512_zextsi256_si512 emu::zextsi256_si512
#undef _mm512_inserti64x4
#define _mm512_inserti64x4 emu::inserti64x4
#undef _mm512_shuffle_i64x2
#define _mm512_shuffle_i64x2 emu::shuffle_i64x2
#define _mm512_castps256_ps512 emu::castps256_ps512
#define _mm512_and_si512 emu::and_si512
#define _mm512_or_si512 emu::or_si512
#undef _mm512_ternarylogic_epi32
#define _mm512_ternarylogic_epi32 emu::ternarylogic_epi32
#undef _mm512_slli_epi16
#undef _mm512_srli_epi16
#define _mm512_slli_epi16 emu::slli_epi16
#define _mm512_srli_epi16 emu::srli_epi16
#define _mm512_cvtepi32_ps emu::cvtepi32_ps
#define _mm512_cvtepi16_epi32 emu::cvtepi16_epi32
#define _mm512_cvtepi8_epi32 emu::cvtepi8_epi32
#undef _mm512_srli_epi32
#define _mm512_srli_epi32 emu::srli_epi32
#define _mm512_cvtepu8_epi32 emu::cvtepu8_epi32
#define _mm512_permutexvar_ps emu::permutexvar_ps
#define _mm512_reduce_add_ps emu::reduce_add_ps
#define _mm512_abs_epi8 emu::abs_epi8
#define _mm512_movepi8_mask emu::movepi8_mask
#undef _mm512_cmpeq_epi8_mask
#define _mm512_cmpeq_epi8_mask emu::cmpeq_epi8_mask
#define _mm512_mask_sub_epi8 emu::mask_sub_epi8
#define _mm512_sub_epi8 emu::sub_epi8
#undef _mm512_srai_epi32
#define _mm512_srai_epi32 emu::srai_epi32
#define _mm512_sub_epi32 emu::sub_epi32
#define _mm512_storeu_si512 emu::storeu_si512
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbssd
#define _tile_loadconfig(p) emu::loadconfig(p)
#define _tile_release() emu::release()
#define _tile_loadd(t, b, s) emu::loadd(t, b, s)
#define _tile_stored(t, b, s) emu::stored(t, b, s)
#define _tile_zero(t) emu::zero(t)
#define _tile_dpbssd(c, a, b) emu::dpbssd(c, a, b)
// let gemm_s8_avx512_core.h's ISA guard pass (the intrinsics above are emulated)
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VNNI__
#define __AVX512VNNI__ 1
#endif
