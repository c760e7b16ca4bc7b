// gemm_s8_avx512vnni.cpp - int8 GEMM micro-kernel for AVX-512 VNNI (vpdpbusd on
// zmm: Ice Lake / Sapphire Rapids and later, Zen 4 / Zen 5). Built with
// -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma.
//
// Register tile: 8 rows x 48 columns (3 packed n16k4 blocks) = 24 zmm int32
// accumulators; 3 B loads + 8 A broadcasts per k-step. A arrives as u8
// (int8 + 128, the table sets a_u8); the accumulators start at -128 * colsum.
// The implementation (tails, loop order, groups) lives in gemm_s8_avx512_core.h,
// shared with the AMX kernel, which runs it on plain int8 A.
//
// Testing: native/test/test_kernels --isa avx512vnni (matmul_s8 exact int32 and
// linear_s8 f32 against independent references; exit 77 = skipped on CPUs
// without the ISA); gemm_s8_ref is the contract's oracle. Not run on real
// AVX-512 hardware when written: it was checked against gemm_s8_ref with an
// intrinsic emulator (exact ints bit for bit, f32 to rounding) over row tails,
// odd block counts, n % 16 != 0, groups 16/32/64/128/256/k_pad, bias on/off,
// lda > k_pad, ldc > n and random [m0,m1) x [nb0,nb1) sub-ranges.
#include "gemm_s8_avx512_core.h"

namespace sparq {

void gemm_s8_avx512vnni(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  avx512_s8::run<true>(p, m0, m1, nb0, nb1);
}

}  // namespace sparq
