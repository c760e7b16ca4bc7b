// half.h - scalar IEEE binary16 <-> f32 conversions (round to nearest even),
// for the reference paths and the KV cache store. Vector paths use F16C.
#pragma once
#include <cstdint>
#include <cstring>

namespace sparq {
// Internal linkage: this header is included by files compiled with different
// instruction-set flags, and one shared (COMDAT) copy could carry AVX-512 code
// into a baseline caller.
namespace {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do { man <<= 1; ++e; } while (!(man & 0x400u));
    bits = sign | uint32_t(112 - e) << 23 | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u);         // NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);        // overflow (>= 65520) -> inf
  if (ax < 0x38800000u) {                                        // below the smallest normal half
    if (ax < 0x33000000u) return sign;                           // < 2^-25 rounds to 0
    const uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(ax >> 23);                       // 14..24
    const uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    return uint16_t(sign | (q + (rem > half || (rem == half && (q & 1u)))));
  }
  const uint32_t base = ax - 0x38000000u;                        // rebias 127 -> 15
  const uint32_t q = base >> 13, rem = base & 0x1fffu;
  return uint16_t(sign | (q + (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))));
}

}  // namespace
}  // namespace sparq
