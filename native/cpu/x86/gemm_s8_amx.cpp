// gemm_s8_amx.cpp - int8 GEMM micro-kernel for AMX-INT8 (tdpbssd, s8 x s8):
// Sapphire Rapids / Emerald Rapids / Granite Rapids.
// Built with -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mavx512vnni -mfma.
//
// Tile shape: 32 rows x 32 columns per step, 2 A x 2 B -> 4 C tiles:
//   tmm4, tmm5 = A rows r0..r0+15 / r0+16..r0+31, KT k bytes each (16 x KT),
//                loaded straight from A with stride lda;
//   tmm6, tmm7 = B blocks nb / nb+1: KT/4 consecutive k-steps of the packed
//                n16k4 block = KT/4 rows x 64 bytes, stride 64 (formats.h);
//   tmm0..3    = C[a][b] = tmm(2a+b), 16 x 16 int32.
// KT = 64 (one full tile) except for group 32, where KT = 32 so a C flush
// lands on every group boundary. A is plain int8 (table: a_u8 false), so no
// colsum correction. Tiles are configured (palette 1) in every call, since a
// pool thread may run it first, and released at the end.
// Native: exact int32 mode, f32 per-channel, and f32 groups whose size is a
// multiple of 32 (C tiles are stored and scaled into f32 sums per group).
// Tails: a last partial 16-row tile (rows % 16) is copied once per call into a
// zero-padded 16 x k_pad scratch tile, so tile loads never read past row m1 - 1;
// only its valid rows are written. An odd block count uses 1 B tile. Columns
// j >= b->n are never written (masked stores; exact mode stores a full tile
// straight to ci only when all 16 rows and 16 columns are valid).
// Fallback to the AVX-512 VNNI kernel (gemm_s8_avx512_core.h) run on plain int8
// A (xor 0x80 on the broadcast = u8 + 128, undone with colsum as usual): calls
// with fewer than 16 rows (decode: a 16-row tile would be mostly padding and
// the call is memory-bound anyway), and packings the tiles cannot walk:
// k_pad % 64 != 0, or groups that are not a multiple of 32 or whose last one
// runs past k_pad (the packer allows any group % 4 == 0; 32/64/128 and
// per-channel, the usual ones, all run on AMX).
// Loop order: blocks of rows whose A fits in L2 (<= 1 MB), inside them pairs of
// B blocks, inside them the 32-row steps, so a B pair (32 x k_pad) is reused
// from L2 by all row steps of the block.
// Requires the process to have been granted AMX state (Linux:
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) before the first call;
// that is the dispatcher's job, not this kernel's.
//
// Testing: native/test/test_kernels --isa amx (matmul_s8 exact int32 and
// linear_s8 f32 against independent references; exit 77 = skipped on CPUs
// without AMX); gemm_s8_ref is the contract's oracle. Not run on real AMX
// hardware when written: it was checked against gemm_s8_ref with a tile
// emulator that also enforces the tile shapes (C.rows == A.rows, A.colsb ==
// 4 * B.rows, ...) over m % 16 / m % 32 tails, m < 16 (fallback), odd block
// counts, n % 16 != 0, groups 16/32/64/128/256/k_pad, bias on/off, lda > k_pad,
// ldc > n and random [m0,m1) x [nb0,nb1) sub-ranges.
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../kernels.h"
#include "gemm_s8_avx512_core.h"

namespace sparq {
namespace {

#define SPARQ_INLINE inline __attribute__((always_inline))

constexpr int64_t kTileM = 16;               // rows per A / C tile
constexpr int64_t kMinRows = 16;             // fewer rows per call: AVX-512 VNNI
constexpr int64_t kABlockBytes = 1 << 20;    // rows per outer block: A block <= this

// LDTILECFG memory layout (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// GCC's tile intrinsics are asm statements that do not tell the compiler which
// memory they read (tileloadd, ldtilecfg reads only "8 bytes"): this makes the
// pointed-to data escape and orders every earlier store before them.
SPARQ_INLINE void compiler_barrier(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

// Per-thread scratch for the zero-padded tail tile, 64-byte aligned so tile
// rows do not split cache lines. Grows, never shrinks.
uint8_t* scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t(63));
}

using avx512_s8::col_mask;  // valid-column mask of a block (j < n)
using avx512_s8::to_f32;    // int32 -> f32

// Tile numbers must be literals in GCC's tile macros.
SPARQ_INLINE void tile_store(int t, void* base, int64_t stride) {
  switch (t) {
    case 0: _tile_stored(0, base, stride); break;
    case 1: _tile_stored(1, base, stride); break;
    case 2: _tile_stored(2, base, stride); break;
    default: _tile_stored(3, base, stride); break;
  }
}

struct AmxCtx {
  const int8_t* b;   // packed data
  int64_t bstride;   // bytes per 16-column block = k_pad * 16
  int64_t kt;        // k bytes per tile step (64, or 32 for group 32)
  int64_t tsteps;    // tile steps per group (k_pad / 64 when groups == 1)
  int64_t groups;    // 1 in exact mode and per-channel f32
  const float* scales;
  const float* bias;
  const float* a_scale;
  const float* a_gscale;  // (m, groups) or nullptr (see GemmS8Args)
  float* c;
  int32_t* ci;
  int64_t ldc;
  int64_t n;
  int64_t m1;        // end of this call's rows: rows >= m1 are never written
};

// C[a][b] += A[a] x B[b] over `steps` tile steps; a*: first A row of tile a at
// the first k, with its stride; b*: block start at the first k.
template <int NA, int NB>
SPARQ_INLINE void k_loop(const uint8_t* a0, int64_t sa0, const uint8_t* a1, int64_t sa1, const int8_t* b0,
                         const int8_t* b1, int64_t steps, int64_t kt) {
  const int64_t bstep = kt / kS8StepK * kS8BlockBytes;  // KT/4 k-steps of 64 bytes
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(6, b0, kS8BlockBytes);
    if constexpr (NB == 2) _tile_loadd(7, b1, kS8BlockBytes);
    _tile_loadd(4, a0, sa0);
    _tile_dpbssd(0, 4, 6);
    if constexpr (NB == 2) _tile_dpbssd(1, 4, 7);
    if constexpr (NA == 2) {
      _tile_loadd(5, a1, sa1);
      _tile_dpbssd(2, 5, 6);
      if constexpr (NB == 2) _tile_dpbssd(3, 5, 7);
    }
    a0 += kt;
    b0 += bstep;
    if constexpr (NA == 2) a1 += kt;
    if constexpr (NB == 2) b1 += bstep;
  }
}

SPARQ_INLINE void zero_c(int na, int nb) {
  _tile_zero(0);
  if (nb == 2) _tile_zero(1);
  if (na == 2) {
    _tile_zero(2);
    if (nb == 2) _tile_zero(3);
  }
}

// Stores the used C tiles to cbuf[2a+b] (16 rows x 16 int32, stride 64).
SPARQ_INLINE void store_c(int na, int nb, int32_t (&cbuf)[4][kTileM][kS8BlockN]) {
  for (int a = 0; a < na; ++a)
    for (int b = 0; b < nb; ++b) tile_store(2 * a + b, cbuf[2 * a + b], kS8BlockN * sizeof(int32_t));
  compiler_barrier(cbuf);
}

// One step: rows [r0, r0 + 16*NA) (rows >= m1 computed on padding, not
// written), blocks [nb, nb + NB). ap[a], sa[a]: A tile a (row r0 + 16a, k = 0).
template <int NA, int NB>
void step(const AmxCtx& x, const uint8_t* const* ap, const int64_t* sa, int64_t r0, int64_t nb) {
  const int8_t* b0 = x.b + nb * x.bstride;
  const int8_t* b1 = NB == 2 ? b0 + x.bstride : b0;
  const uint8_t* a0 = ap[0];
  const uint8_t* a1 = NA == 2 ? ap[1] : ap[0];
  const int64_t sa0 = sa[0], sa1 = NA == 2 ? sa[1] : sa[0];
  int64_t rows[2];
  __mmask16 mask[2];
  for (int a = 0; a < 2; ++a) rows[a] = std::min<int64_t>(kTileM, x.m1 - (r0 + a * kTileM));
  for (int b = 0; b < 2; ++b) mask[b] = b < NB ? col_mask(x.n, nb + b) : __mmask16(0);
  alignas(64) int32_t cbuf[4][kTileM][kS8BlockN];

  if (x.groups == 1) {
    zero_c(NA, NB);
    k_loop<NA, NB>(a0, sa0, a1, sa1, b0, b1, x.tsteps, x.kt);
    if (x.ci) {
      // Exact: full tiles go straight to ci; partial ones through cbuf.
      for (int a = 0; a < NA; ++a)
        for (int b = 0; b < NB; ++b) {
          const int t = 2 * a + b;
          const int64_t i = r0 + a * kTileM;
          int32_t* out = x.ci + i * x.ldc + (nb + b) * kS8BlockN;
          if (rows[a] == kTileM && mask[b] == __mmask16(0xFFFF)) {
            tile_store(t, out, x.ldc * int64_t(sizeof(int32_t)));
          } else {
            tile_store(t, cbuf[t], kS8BlockN * sizeof(int32_t));
            compiler_barrier(cbuf);
            for (int64_t r = 0; r < rows[a]; ++r)
              _mm512_mask_storeu_epi32(out + r * x.ldc, mask[b], _mm512_load_si512(cbuf[t][r]));
          }
        }
      return;
    }
    // f32 per-channel; same order of operations as the reference.
    store_c(NA, NB, cbuf);
    for (int b = 0; b < NB; ++b) {
      const __m512 sc = _mm512_loadu_ps(x.scales + s8_group_index(nb + b, 0, x.groups));
      const __m512 bi =
          x.bias ? _mm512_maskz_loadu_ps(mask[b], x.bias + (nb + b) * kS8BlockN) : _mm512_setzero_ps();
      for (int a = 0; a < NA; ++a) {
        const int64_t i = r0 + a * kTileM;
        for (int64_t r = 0; r < rows[a]; ++r) {
          __m512 v = _mm512_mul_ps(to_f32(_mm512_load_si512(cbuf[2 * a + b][r])), sc);
          v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(x.a_scale[i + r])), bi);
          _mm512_mask_storeu_ps(x.c + (i + r) * x.ldc + (nb + b) * kS8BlockN, mask[b], v);
        }
      }
    }
    return;
  }

  // f32 with groups: C is flushed after each group's tsteps tile steps
  // (k bytes [g*group, (g+1)*group)), sum[a][r][b] += float(C) * scale[g].
  alignas(64) float sum[2][kTileM][2][kS8BlockN];
  for (int a = 0; a < NA; ++a)
    for (int64_t r = 0; r < rows[a]; ++r)
      for (int b = 0; b < NB; ++b) _mm512_store_ps(sum[a][r][b], _mm512_setzero_ps());
  const int64_t gbytes = x.tsteps * x.kt;  // == group
  for (int64_t g = 0; g < x.groups; ++g) {
    const int64_t ko = g * gbytes;                                  // A byte offset
    const int64_t bo = ko / kS8StepK * kS8BlockBytes;                // B byte offset
    zero_c(NA, NB);
    k_loop<NA, NB>(a0 + ko, sa0, a1 + ko, sa1, b0 + bo, b1 + bo, x.tsteps, x.kt);
    store_c(NA, NB, cbuf);
    for (int b = 0; b < NB; ++b) {
      const __m512 sc = _mm512_loadu_ps(x.scales + s8_group_index(nb + b, g, x.groups));
      for (int a = 0; a < NA; ++a)
        for (int64_t r = 0; r < rows[a]; ++r) {
          const __m512 s = x.a_gscale ? _mm512_mul_ps(sc, _mm512_set1_ps(x.a_gscale[(r0 + a * kTileM + r) * x.groups + g])) : sc;
          const __m512 t = _mm512_mul_ps(to_f32(_mm512_load_si512(cbuf[2 * a + b][r])), s);
          _mm512_store_ps(sum[a][r][b], _mm512_add_ps(_mm512_load_ps(sum[a][r][b]), t));
        }
    }
  }
  for (int b = 0; b < NB; ++b) {
    const __m512 bi = x.bias ? _mm512_maskz_loadu_ps(mask[b], x.bias + (nb + b) * kS8BlockN) : _mm512_setzero_ps();
    for (int a = 0; a < NA; ++a) {
      const int64_t i = r0 + a * kTileM;
      for (int64_t r = 0; r < rows[a]; ++r) {
        const __m512 v = _mm512_mul_ps(_mm512_load_ps(sum[a][r][b]), _mm512_set1_ps(x.a_scale[i + r]));
        _mm512_mask_storeu_ps(x.c + (i + r) * x.ldc + (nb + b) * kS8BlockN, mask[b], _mm512_add_ps(v, bi));
      }
    }
  }
}

using StepFn = void (*)(const AmxCtx&, const uint8_t* const*, const int64_t*, int64_t, int64_t);
const StepFn kSteps[2][2] = {{&step<1, 1>, &step<1, 2>}, {&step<2, 1>, &step<2, 2>}};  // [NA-1][NB-1]

#undef SPARQ_INLINE

}  // namespace

void gemm_s8_amx(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  assert(p.a && p.b);
  const PackedS8& b = *p.b;
  assert(b.data);
  // PackedWeight::create only makes groups 4..32 or multiples of 64 (k_pad % 64
  // == 0), but the kernel contract is any group % 4 == 0 (test_emulated_isa
  // packs 48, 96, 100...): only what the code needs is asserted (k_pad % 4; the
  // AMX path checks % 64 itself and falls back otherwise).
  assert(b.k_pad % kS8StepK == 0 && b.k_pad >= b.k && b.n_pad % kS8BlockN == 0 && b.n <= b.n_pad);
  assert(p.lda >= b.k_pad);
  assert(0 <= m0 && m0 <= m1 && m1 <= p.m);
  assert(0 <= nb0 && nb0 <= nb1 && nb1 <= s8_blocks(b));
  // Every group starts inside k_pad; the last one may end past it (the packer
  // allows e.g. group 48 with k = 100: 3 groups, k_pad 128), so it is clamped.
  assert(b.groups >= 1 && b.group > 0 && b.group % kS8StepK == 0 && (b.groups - 1) * b.group < b.k_pad);
  assert(p.ci ? b.groups == 1 : (p.c && b.scales && p.a_scale));
  assert(p.ldc >= b.n);
  nb1 = std::min(nb1, s8_blocks(b));  // release builds clamp what the asserts check
  if (m0 >= m1 || nb0 >= nb1) return;

  const bool grouped = !p.ci && b.groups > 1;
  // Tiles need k_pad % 64 == 0 and groups on 32-byte tile steps inside k_pad.
  const bool tiles_fit =
      b.k_pad % kS8AlignK == 0 && (!grouped || (b.group % 32 == 0 && b.groups * b.group <= b.k_pad));
  if (m1 - m0 < kMinRows || !tiles_fit) {
    avx512_s8::run</*kAU8=*/false>(p, m0, m1, nb0, nb1);
    return;
  }

  AmxCtx x;
  x.b = b.data;
  x.bstride = b.k_pad * kS8BlockN;
  x.kt = grouped && b.group % 64 != 0 ? 32 : 64;
  x.tsteps = (grouped ? b.group : b.k_pad) / x.kt;
  x.groups = grouped ? b.groups : 1;
  x.scales = b.scales;
  x.bias = p.bias;
  x.a_scale = p.a_scale;
  x.a_gscale = grouped ? p.a_gscale : nullptr;
  x.c = p.c;
  x.ci = p.ci;
  x.ldc = p.ldc;
  x.n = b.n;
  x.m1 = m1;

  // 16-row tiles start at m0 + 16q. The last one is partial iff (m1 - m0) % 16:
  // it starts at full_end and reads a zero-padded copy of rows [full_end, m1).
  const int64_t kp = b.k_pad;
  const int64_t full_end = m0 + (m1 - m0) / kTileM * kTileM;
  const uint8_t* tail = nullptr;
  if (full_end < m1) {
    uint8_t* t = scratch(size_t(kTileM * kp));
    std::memset(t, 0, size_t(kTileM * kp));
    for (int64_t i = full_end; i < m1; ++i) std::memcpy(t + (i - full_end) * kp, p.a + i * p.lda, size_t(kp));
    compiler_barrier(t);
    tail = t;
  }

  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 4; ++t) {  // C: 16 rows x 16 int32
    cfg.rows[t] = kTileM;
    cfg.colsb[t] = kS8BlockN * sizeof(int32_t);
  }
  for (int t = 4; t < 6; ++t) {  // A: 16 rows x KT bytes
    cfg.rows[t] = kTileM;
    cfg.colsb[t] = uint16_t(x.kt);
  }
  for (int t = 6; t < 8; ++t) {  // B: KT/4 k-steps x (16 columns x 4 bytes)
    cfg.rows[t] = uint8_t(x.kt / kS8StepK);
    cfg.colsb[t] = kS8BlockBytes;
  }
  compiler_barrier(&cfg);
  _tile_loadconfig(&cfg);

  // mc is a multiple of 32, so every 32-row step starts at m0 + 32q and only the
  // very last A tile of the call can be partial (it is then `tail`).
  const int64_t mc = std::max<int64_t>(2 * kTileM, kABlockBytes / kp / (2 * kTileM) * (2 * kTileM));
  for (int64_t ib = m0; ib < m1; ib += mc) {
    const int64_t ie = std::min(m1, ib + mc);
    for (int64_t nb = nb0; nb < nb1; nb += 2) {
      const int64_t nbc = std::min<int64_t>(2, nb1 - nb);
      for (int64_t r0 = ib; r0 < ie; r0 += 2 * kTileM) {
        const int64_t na = ie - r0 > kTileM ? 2 : 1;
        const uint8_t* ap[2] = {nullptr, nullptr};
        int64_t sa[2] = {0, 0};
        for (int64_t a = 0; a < na; ++a) {
          const int64_t r = r0 + a * kTileM;
          if (r + kTileM <= m1) {
            ap[a] = p.a + r * p.lda;
            sa[a] = p.lda;
          } else {
            assert(r == full_end && tail);
            ap[a] = tail;
            sa[a] = kp;
          }
        }
        kSteps[na - 1][nbc - 1](x, ap, sa, r0, nb);
      }
    }
  }
  _tile_release();
}

}  // namespace sparq
