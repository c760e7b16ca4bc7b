// emu_avxvnni.h - test-only emulation of the AVX-VNNI vpdpbusd intrinsic (see
// emu_avx512_amx.h).
#pragma once
// kernels check it to avoid their inline-asm forms of the emulated instructions
#define SPARQ_EMULATED_ISA 1
#include <immintrin.h>
#include <cstdint>
#include <cstring>
namespace emu {
inline __m256i dpbusd256(__m256i s, __m256i a, __m256i b) {
  uint32_t x[8]; uint8_t ua[32]; int8_t sb[32];
  std::memcpy(x, &s, 32); std::memcpy(ua, &a, 32); std::memcpy(sb, &b, 32);
  for (int l = 0; l < 8; ++l) for (int t = 0; t < 4; ++t) x[l] += uint32_t(int32_t(ua[4 * l + t]) * int32_t(sb[4 * l + t]));
  __m256i r; std::memcpy(&r, x, 32); return r;
}
}
#define _mm256_dpbusd_avx_epi32 emu::dpbusd256
