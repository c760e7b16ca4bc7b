// ceiling.h - the per-ISA ceiling loops measure_ceilings (ceiling_avx2.cpp)
// times: each runs `iters` rounds of 12 independent chains and returns a value
// the caller keeps (so nothing is optimised away). Call only where the CPU
// itself has the ISA (isa_supported and not isa_emulated).
#pragma once
#include <cstdint>

namespace sparq {
float ceiling_fma512_loop(int64_t iters);  // 12 zmm fp32 FMAs per round
int ceiling_vnni512_loop(int64_t iters);   // 12 zmm vpdpbusd per round
int ceiling_vnni256_loop(int64_t iters);   // 12 ymm vpdpbusd (AVX-VNNI) per round
}  // namespace sparq
