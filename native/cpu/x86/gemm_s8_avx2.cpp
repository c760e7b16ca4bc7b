// gemm_s8_avx2.cpp - int8 GEMM micro-kernel for AVX2 (ymm), tile 4 rows x 16
// columns (2 ymm per row), over the packed n16k4 weight layout; m = 1 (decode)
// runs 1 row x 32 columns so each thread streams two weight blocks at once.
//
// vpmaddubsw multiplies u8 x s8 and adds pairs into int16 with saturation. We
// keep it exact with the sign trick: |x| goes into the u8 slot (vpabsb(-128)
// is 0x80 = 128 as u8, correct) and the other operand takes x's sign (vpsignb).
// Each product is then at most 128 * 127 in magnitude when the signed operand
// is not -128 after the sign change, so a pair sums to [-32768, 32512]: no
// saturation. vpsignb(-128) stays -128 instead of +128, so the orientation is
// chosen per call: |B| and sign(A, B) when A holds no -128 (always true for
// sparq's quantized activations, which are clamped to [-127, 127]); else |A|
// and sign(B, A) when B holds no -128; the driver sends the remaining case to
// the reference kernel. Tested against gemm_s8_ref in native/test and test/.
//
// Small codes (B known to lie in [lo, hi] with C = hi - min(lo, 0) <= 63: the
// expanded GGUF block types and int4): B + max(-lo, 0) is a u8 code <= C, and
// vpmaddubsw(code, A) is exact with no sign trick (a pair is at most 2 x 128 x C).
// 4-bit codes in 32-value groups sum their int16 pairs over the whole group (8
// steps x 2 x 128 x 15 < 2^15); wider codes add two steps' pairs before vpmaddwd.
// A step then costs vpmaddubsw + vpaddw per vector (+ vpmaddwd + vpaddd every
// second step for wider codes) instead of vpabsb / vpsignb / vpmaddubsw /
// vpmaddwd / vpaddd; -lo x the group's sum of A (GemmS8Args::a_gsum) is taken
// back per group.
#include <immintrin.h>

#include <cassert>
#include <cstring>

#include "../kernels.h"

namespace sparq {
namespace {

// MR rows x NB blocks of 16 columns. NB = 2 is the decode (m = 1) shape: two
// independent weight streams per thread keep more DRAM reads in flight.
// kS: 0 the sign trick; kWhole small codes with int16 sums over the whole group;
// 2 small codes with two steps' int16 pairs added per int32 update.
constexpr int kWhole = 1 << 20;
template <int MR, int NB, bool kAbsB, int kS = 0>
inline void tile(const GemmS8Args& p, int64_t i0, int64_t nb0) {
  const PackedS8& b = *p.b;
  const int64_t ksteps = b.k_pad / kS8StepK;
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* arow[MR];
  for (int r = 0; r < MR; ++r) arow[r] = p.a + (i0 + r) * p.lda;

  alignas(32) float facc[NB][MR][16];
  alignas(32) int32_t iout[NB][MR][16];
  if (!p.ci) std::memset(facc, 0, sizeof(facc));
  const int64_t group_steps = b.group / kS8StepK;

  for (int64_t g = 0; g < b.groups; ++g) {
    __m256i acc[NB][MR][2];
    for (int c = 0; c < NB; ++c)
      for (int r = 0; r < MR; ++r) acc[c][r][0] = acc[c][r][1] = _mm256_setzero_si256();
    const int64_t s0 = g * group_steps, s1 = s0 + group_steps;
    const int8_t* bp[NB];
    for (int c = 0; c < NB; ++c) bp[c] = b.data + ((nb0 + c) * ksteps + s0) * kS8BlockBytes;
    const int32_t beta = b.lo < 0 ? -b.lo : 0;
    if constexpr (kS == 2) {
      // 5- and 6-bit codes (and 4-bit ones in groups past 32 values): two steps' pairs
      // added as temporaries, then into int32 (an int16 sum kept across steps beside
      // the int32 one would not fit the registers: measured slower)
      const __m256i shift = _mm256_set1_epi8(int8_t(beta));
      auto codes = [&](const int8_t* q) {
        return _mm256_add_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(q)), shift);
      };
      auto bcast = [&](int r, int64_t s) {
        int32_t av;
        std::memcpy(&av, arow[r] + s * 4, 4);
        return _mm256_set1_epi32(av);
      };
      int64_t s = s0;
      for (; s + 2 <= s1; s += 2)
        for (int c = 0; c < NB; ++c) {
          _mm_prefetch(reinterpret_cast<const char*>(bp[c]) + 1024, _MM_HINT_T0);
          const __m256i b0 = codes(bp[c]), b1 = codes(bp[c] + 32), e0 = codes(bp[c] + 64), e1 = codes(bp[c] + 96);
          bp[c] += 2 * kS8BlockBytes;
          for (int r = 0; r < MR; ++r) {
            const __m256i a = bcast(r, s), a2 = bcast(r, s + 1);
            acc[c][r][0] = _mm256_add_epi32(
                acc[c][r][0], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(b0, a), _mm256_maddubs_epi16(e0, a2)), ones));
            acc[c][r][1] = _mm256_add_epi32(
                acc[c][r][1], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(b1, a), _mm256_maddubs_epi16(e1, a2)), ones));
          }
        }
      if (s < s1)  // an odd step count
        for (int c = 0; c < NB; ++c) {
          const __m256i b0 = codes(bp[c]), b1 = codes(bp[c] + 32);
          for (int r = 0; r < MR; ++r) {
            const __m256i a = bcast(r, s);
            acc[c][r][0] = _mm256_add_epi32(acc[c][r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(b0, a), ones));
            acc[c][r][1] = _mm256_add_epi32(acc[c][r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(b1, a), ones));
          }
        }
    } else if constexpr (kS == kWhole) {
      const __m256i shift = _mm256_set1_epi8(int8_t(beta));
      __m256i a16[NB][MR][2];
      for (int c = 0; c < NB; ++c)
        for (int r = 0; r < MR; ++r) a16[c][r][0] = a16[c][r][1] = _mm256_setzero_si256();
      for (int64_t s = s0; s < s1; ++s) {
        for (int c = 0; c < NB; ++c) {
          _mm_prefetch(reinterpret_cast<const char*>(bp[c]) + 1024, _MM_HINT_T0);
          __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp[c]));
          __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp[c] + 32));
          bp[c] += kS8BlockBytes;
          if (beta) {
            b0 = _mm256_add_epi8(b0, shift);
            b1 = _mm256_add_epi8(b1, shift);
          }
          for (int r = 0; r < MR; ++r) {
            int32_t av;
            std::memcpy(&av, arow[r] + s * 4, 4);
            const __m256i a = _mm256_set1_epi32(av);
            a16[c][r][0] = _mm256_add_epi16(a16[c][r][0], _mm256_maddubs_epi16(b0, a));
            a16[c][r][1] = _mm256_add_epi16(a16[c][r][1], _mm256_maddubs_epi16(b1, a));
          }
        }
      }
      for (int c = 0; c < NB; ++c)
        for (int r = 0; r < MR; ++r)
          for (int h = 0; h < 2; ++h) acc[c][r][h] = _mm256_madd_epi16(a16[c][r][h], ones);
    } else {
      for (int64_t s = s0; s < s1; ++s) {
        for (int c = 0; c < NB; ++c) {
          _mm_prefetch(reinterpret_cast<const char*>(bp[c]) + 1024, _MM_HINT_T0);
          const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp[c]));
          const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp[c] + 32));
          bp[c] += kS8BlockBytes;
          if (kAbsB) {
            const __m256i ub0 = _mm256_abs_epi8(b0), ub1 = _mm256_abs_epi8(b1);
            for (int r = 0; r < MR; ++r) {
              int32_t av;
              std::memcpy(&av, arow[r] + s * 4, 4);
              const __m256i a = _mm256_set1_epi32(av);
              const __m256i p0 = _mm256_maddubs_epi16(ub0, _mm256_sign_epi8(a, b0));
              const __m256i p1 = _mm256_maddubs_epi16(ub1, _mm256_sign_epi8(a, b1));
              acc[c][r][0] = _mm256_add_epi32(acc[c][r][0], _mm256_madd_epi16(p0, ones));
              acc[c][r][1] = _mm256_add_epi32(acc[c][r][1], _mm256_madd_epi16(p1, ones));
            }
          } else {
            for (int r = 0; r < MR; ++r) {
              int32_t av;
              std::memcpy(&av, arow[r] + s * 4, 4);
              const __m256i a = _mm256_set1_epi32(av);
              const __m256i ua = _mm256_abs_epi8(a);
              const __m256i p0 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(b0, a));
              const __m256i p1 = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(b1, a));
              acc[c][r][0] = _mm256_add_epi32(acc[c][r][0], _mm256_madd_epi16(p0, ones));
              acc[c][r][1] = _mm256_add_epi32(acc[c][r][1], _mm256_madd_epi16(p1, ones));
            }
          }
        }
      }
    }
    if (kS > 0 && beta)  // small codes: take -lo x the group's activation sum back
      for (int c = 0; c < NB; ++c)
        for (int r = 0; r < MR; ++r) {
          const __m256i back = _mm256_set1_epi32(beta * p.a_gsum[(i0 + r) * b.groups + g]);
          for (int h = 0; h < 2; ++h) acc[c][r][h] = _mm256_sub_epi32(acc[c][r][h], back);
        }
    for (int c = 0; c < NB; ++c) {
      if (p.ci) {
        for (int r = 0; r < MR; ++r) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(iout[c][r]), acc[c][r][0]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(iout[c][r] + 8), acc[c][r][1]);
        }
      } else {
        const float* sc = b.scales + s8_group_index(nb0 + c, g, b.groups);
        const __m256 s0v = _mm256_loadu_ps(sc), s1v = _mm256_loadu_ps(sc + 8);
        for (int r = 0; r < MR; ++r) {
          float* f = facc[c][r];
          __m256 t0 = s0v, t1 = s1v;
          if (p.a_gscale) {
            const __m256 ag = _mm256_set1_ps(p.a_gscale[(i0 + r) * b.groups + g]);
            t0 = _mm256_mul_ps(t0, ag);
            t1 = _mm256_mul_ps(t1, ag);
          }
          _mm256_store_ps(f, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[c][r][0]), t0, _mm256_load_ps(f)));
          _mm256_store_ps(f + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[c][r][1]), t1, _mm256_load_ps(f + 8)));
        }
      }
    }
  }

  for (int c = 0; c < NB; ++c) {
    const int64_t j0 = (nb0 + c) * kS8BlockN;
    const int64_t ncols = b.n - j0 < kS8BlockN ? (b.n > j0 ? b.n - j0 : 0) : kS8BlockN;
    for (int r = 0; r < MR; ++r) {
      const int64_t i = i0 + r;
      if (p.ci) {
        std::memcpy(p.ci + i * p.ldc + j0, iout[c][r], size_t(ncols) * 4);
        continue;
      }
      const __m256 as = _mm256_set1_ps(p.a_scale[i]);
      __m256 o0 = _mm256_mul_ps(_mm256_load_ps(facc[c][r]), as);
      __m256 o1 = _mm256_mul_ps(_mm256_load_ps(facc[c][r] + 8), as);
      if (ncols == kS8BlockN) {
        if (p.bias) {
          o0 = _mm256_add_ps(o0, _mm256_loadu_ps(p.bias + j0));
          o1 = _mm256_add_ps(o1, _mm256_loadu_ps(p.bias + j0 + 8));
        }
        _mm256_storeu_ps(p.c + i * p.ldc + j0, o0);
        _mm256_storeu_ps(p.c + i * p.ldc + j0 + 8, o1);
      } else {  // last block: only the n % 16 existing columns (and bias entries)
        alignas(32) float out[16];
        _mm256_store_ps(out, o0);
        _mm256_store_ps(out + 8, o1);
        for (int64_t jj = 0; jj < ncols; ++jj) p.c[i * p.ldc + j0 + jj] = out[jj] + (p.bias ? p.bias[j0 + jj] : 0.f);
      }
    }
  }
}

template <bool kAbsB, int kS = 0>
void run(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  if (m1 - m0 == 1) {  // decode: two weight streams at once
    int64_t nb = nb0;
    for (; nb + 2 <= nb1; nb += 2) tile<1, 2, kAbsB, kS>(p, m0, nb);
    if (nb < nb1) tile<1, 1, kAbsB, kS>(p, m0, nb);
    return;
  }
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    int64_t i = m0;
    for (; i + 4 <= m1; i += 4) tile<4, 1, kAbsB, kS>(p, i, nb);
    switch (m1 - i) {
      case 3: tile<3, 1, kAbsB, kS>(p, i, nb); break;
      case 2: tile<2, 1, kAbsB, kS>(p, i, nb); break;
      case 1: tile<1, 1, kAbsB, kS>(p, i, nb); break;
      default: break;
    }
  }
}

// Steps whose int16 pair sums may be added for B in [lo, hi] (0: not small codes):
// each step adds at most 2 x 128 x C, C = the largest code.
int64_t small_code_steps(const GemmS8Args& p) {
  const PackedS8& b = *p.b;
  if (b.lo >= b.hi || b.lo < -128 || b.hi > 127 || (b.lo < 0 && !p.a_gsum)) return 0;
  const int64_t C = b.hi - (b.lo < 0 ? b.lo : 0);
  return 32767 / (256 * C);
}

}  // namespace

void gemm_s8_avx2(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  assert(p.b && p.a && (p.c || p.ci));
  assert(p.lda % 4 == 0 && p.b->group % kS8StepK == 0);
  assert(!(p.a_has_m128 && p.b->has_m128));  // the driver routes this case to the reference
  assert(0 <= m0 && m0 <= m1 && m1 <= p.m && 0 <= nb0 && nb0 <= nb1 && nb1 <= s8_blocks(*p.b));
  assert(p.ldc >= p.b->n && p.lda >= p.b->k_pad);
  nb1 = nb1 < s8_blocks(*p.b) ? nb1 : s8_blocks(*p.b);  // release builds clamp what the asserts check
  const int64_t steps = small_code_steps(p), group_steps = p.b->group / kS8StepK;
  if (steps >= group_steps)  // 4-bit codes in groups of 32 (2- and 3-bit ones in groups of 16)
    run<true, kWhole>(p, m0, m1, nb0, nb1);
  else if (steps >= 2)
    run<true, 2>(p, m0, m1, nb0, nb1);
  else if (!p.a_has_m128)
    run<true>(p, m0, m1, nb0, nb1);
  else
    run<false>(p, m0, m1, nb0, nb1);
}

// The expansion's packer (kernels.h): per 8 rows and 8 k-steps an 8 x 8 transpose
// of 32-bit words (each output vector is one k-step of 8 columns), the column sums
// by vpmaddubsw(1, w) + vpmaddwd(1) on the packed vectors, -128 found by vpcmpeqb.
bool pack_s8_block_avx2(const int8_t* rows, int64_t ld, int64_t k_pad, int64_t group, int64_t groups, int8_t* blk,
                        int32_t* colsum) {
  assert(k_pad % 64 == 0 && group % kS8StepK == 0 && group > 0 && groups >= 1);
  const int64_t ksteps = k_pad / kS8StepK, gsteps = group / kS8StepK;
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1), m128 = _mm256_set1_epi8(-128);
  __m256i neg = _mm256_setzero_si256();
  for (int h = 0; h < 2; ++h) {  // columns 8 h .. 8 h + 7
    const int8_t* r0 = rows + 8 * h * ld;
    __m256i cs = _mm256_setzero_si256();
    int64_t g = 0, left = gsteps;  // the group being summed, its k-steps still to come
    for (int64_t st = 0; st < ksteps; st += 8) {
      __m256i v[8], t[8];
      for (int r = 0; r < 8; ++r) v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + r * ld + st * kS8StepK));
      for (int r = 0; r < 8; r += 2) {
        t[r] = _mm256_unpacklo_epi32(v[r], v[r + 1]);
        t[r + 1] = _mm256_unpackhi_epi32(v[r], v[r + 1]);
      }
      for (int r = 0; r < 8; r += 4) {
        v[r] = _mm256_unpacklo_epi64(t[r], t[r + 2]);
        v[r + 1] = _mm256_unpackhi_epi64(t[r], t[r + 2]);
        v[r + 2] = _mm256_unpacklo_epi64(t[r + 1], t[r + 3]);
        v[r + 3] = _mm256_unpackhi_epi64(t[r + 1], t[r + 3]);
      }
      // v[q] (q < 4) holds words q and q + 4 of rows 0-3; v[4 + q] the same of rows 4-7
      for (int q = 0; q < 4; ++q) {
        t[q] = _mm256_permute2x128_si256(v[q], v[4 + q], 0x20);
        t[4 + q] = _mm256_permute2x128_si256(v[q], v[4 + q], 0x31);
      }
      for (int s = 0; s < 8; ++s) {  // t[s]: k-step st + s of the 8 columns
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk + (st + s) * kS8BlockBytes + h * 32), t[s]);
        neg = _mm256_or_si256(neg, _mm256_cmpeq_epi8(t[s], m128));
        cs = _mm256_add_epi32(cs, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, t[s]), ones16));
        if (--left == 0) {
          if (g < groups) _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + g * kS8BlockN + h * 8), cs);
          ++g;
          left = gsteps;
          cs = _mm256_setzero_si256();
        }
      }
    }
    if (g < groups && left != gsteps) _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + g * kS8BlockN + h * 8), cs);
  }
  return !_mm256_testz_si256(neg, neg);
}

}  // namespace sparq

