// gemm.cu - int8 GEMM on tensor cores (mma.sync m16n8k32, sm_80+), the dp4a
// GEMV for decode (m <= 8), dynamic activation quantization, and the f32
// linear (SIMT).
//
// The int8 contract is the CPU's: C[i, j] = sa[i] * sum_g sb[j, g] * acc_g(i, j)
// (+ bias[j]) with exact int32 accumulation inside each scale group.
#include <cstdint>

#include "common.cuh"

namespace sparq {
namespace cuda {

// --- activation quantization ------------------------------------------------------
// One block per row. The arithmetic is the CPU reference's (inv = 1 / s,
// nearbyint(x * inv), clamp to +-127), so both produce the same int8 rows.
__global__ void quantize_rows_kernel(const float* __restrict__ x, int64_t k, int64_t k_pad, float static_scale,
                                     int8_t* __restrict__ q, float* __restrict__ scale) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * k;
  float s = static_scale;
  if (s <= 0.f) {
    float amax = 0.f;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(xr[i]));
    amax = block_max(amax, red);
    s = amax > 0.f ? amax / 127.f : 1.f;
  }
  const float inv = 1.f / s;
  int8_t* qr = q + row * k_pad;
  int nonfinite = 0;
  for (int64_t i = threadIdx.x; i < k_pad; i += blockDim.x) {
    int v = 0;
    if (i < k) {
      v = max(-127, min(127, __float2int_rn(xr[i] * inv)));
      nonfinite |= !isfinite(xr[i]);
    }
    qr[i] = int8_t(v);
  }
  // as on the CPU: a NaN / Inf input makes the row's outputs NaN
  if (__syncthreads_or(nonfinite)) s = __int_as_float(0x7fc00000);
  if (threadIdx.x == 0) scale[row] = s;
}

Error quantize_rows(Context* ctx, const float* x, int64_t m, int64_t k, int64_t k_pad, float static_scale, int8_t* q,
                    float* scale) {
  SPARQ_CUDA_ENTER(ctx);
  if (m <= 0 || k <= 0 || k_pad < k) return bad_arg("quantize_rows: bad shape");
  if (m > 0x7fffffff) return bad_arg("quantize_rows: too many rows");
  quantize_rows_kernel<<<unsigned(m), 256, 0, ctx->stream>>>(x, k, k_pad, static_scale, q, scale);
  return finish(ctx, "quantize_rows");
}

// --- tensor-core GEMM ----------------------------------------------------------------
// Block tile 128 x 128 x 64, 8 warps as 2 (m) x 4 (n), each warp 64 x 32 =
// 4 x 4 mma tiles of 16 x 8. Shared rows are 80 bytes (64 + 16 of padding)
// so the 8 rows a fragment load touches fall in distinct banks. Global ->
// shared by cp.async (16 B, zero-filled past m / n), double buffered.
namespace mma {
constexpr int BM = 128, BN = 128, BK = 64, LDS = BK + 16, THREADS = 256;
}

enum class Epilogue : int { exact_i32 = 0, per_row = 1, grouped = 2 };

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void mma_s8(int (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <Epilogue E>
__global__ void __launch_bounds__(mma::THREADS)
    gemm_s8_mma_kernel(const int8_t* __restrict__ A, const float* __restrict__ sa, int m, const int8_t* __restrict__ B,
                       const float* __restrict__ sb, int n, int k_pad, int group, int groups,
                       const float* __restrict__ bias, float* __restrict__ C, int32_t* __restrict__ Ci) {
  using namespace mma;
  __shared__ __align__(16) int8_t As[2][BM * LDS];
  __shared__ __align__(16) int8_t Bs[2][BN * LDS];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;  // warp position: 2 x 4
  const int gid = lane >> 2, tig = lane & 3;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

  int acc[4][4][4];
  float facc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0, facc[i][j][r] = 0.f;

  // Each thread copies 2 chunks of 16 B of A and 2 of B per k tile.
  auto load_tile = [&](int buf, int k0) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int chunk = tid + c * THREADS;  // 0..511
      const int r = chunk >> 2, col = (chunk & 3) * 16;
      const int ga = m0 + r, gb = n0 + r;
      cp_async16(&As[buf][r * LDS + col], A + int64_t(ga < m ? ga : 0) * k_pad + k0 + col, ga < m);
      cp_async16(&Bs[buf][r * LDS + col], B + int64_t(gb < n ? gb : 0) * k_pad + k0 + col, gb < n);
    }
    cp_async_commit();
  };

  const int ktiles = k_pad / BK;
  load_tile(0, 0);
  for (int kt = 0; kt < ktiles; ++kt) {
    const int buf = kt & 1;
    cp_async_wait_all();
    __syncthreads();
    if (kt + 1 < ktiles) load_tile(buf ^ 1, (kt + 1) * BK);
    const int8_t* as = As[buf];
    const int8_t* bs = Bs[buf];
#pragma unroll
    for (int kk = 0; kk < BK; kk += 32) {
      unsigned af[4][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = wm * 64 + i * 16 + gid;
        af[i][0] = *reinterpret_cast<const unsigned*>(as + r * LDS + kk + tig * 4);
        af[i][1] = *reinterpret_cast<const unsigned*>(as + (r + 8) * LDS + kk + tig * 4);
        af[i][2] = *reinterpret_cast<const unsigned*>(as + r * LDS + kk + 16 + tig * 4);
        af[i][3] = *reinterpret_cast<const unsigned*>(as + (r + 8) * LDS + kk + 16 + tig * 4);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = wn * 32 + j * 8 + gid;
        bf[j][0] = *reinterpret_cast<const unsigned*>(bs + c * LDS + kk + tig * 4);
        bf[j][1] = *reinterpret_cast<const unsigned*>(bs + c * LDS + kk + 16 + tig * 4);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_s8(acc[i][j], af[i], bf[j]);
      if (E == Epilogue::grouped) {
        const int kend = kt * BK + kk + 32;  // k covered so far
        if (kend % group == 0 || kend == k_pad) {
          const int g = min((kend - 1) / group, groups - 1);  // padding past the last group is zero
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int c0 = n0 + wn * 32 + j * 8 + tig * 2;
            const float s0 = c0 < n ? sb[int64_t(c0) * groups + g] : 0.f;
            const float s1 = c0 + 1 < n ? sb[int64_t(c0 + 1) * groups + g] : 0.f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              facc[i][j][0] += float(acc[i][j][0]) * s0;
              facc[i][j][1] += float(acc[i][j][1]) * s1;
              facc[i][j][2] += float(acc[i][j][2]) * s0;
              facc[i][j][3] += float(acc[i][j][3]) * s1;
              acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0;
            }
          }
        }
      }
    }
  }

  // Epilogue: fragment (i, j) holds rows r, r + 8 and columns c, c + 1.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = n0 + wn * 32 + j * 8 + tig * 2;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = m0 + wm * 64 + i * 16 + gid + h * 8;
        if (r >= m) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int cc = c + e;
          if (cc >= n) continue;
          const int idx = h * 2 + e;
          if (E == Epilogue::exact_i32) {
            Ci[int64_t(r) * n + cc] = acc[i][j][idx];
          } else {
            float v = E == Epilogue::grouped ? facc[i][j][idx] : float(acc[i][j][idx]) * sb[cc];
            v *= sa[r];
            if (bias) v += bias[cc];
            C[int64_t(r) * n + cc] = v;
          }
        }
      }
    }
  }
}

// --- GEMV (m <= 8): one warp per output column, 16 bytes per lane per step ---------
__device__ __forceinline__ int dot16(const int4& a, const int4& b) {
  int s = __dp4a(a.x, b.x, 0);
  s = __dp4a(a.y, b.y, s);
  s = __dp4a(a.z, b.z, s);
  return __dp4a(a.w, b.w, s);
}

template <int M, bool GROUPED>
__global__ void __launch_bounds__(256)
    gemv_s8_kernel(const int8_t* __restrict__ A, const float* __restrict__ sa, const int8_t* __restrict__ B,
                   const float* __restrict__ sb, int n, int k_pad, int group, int groups,
                   const float* __restrict__ bias, float* __restrict__ C, int32_t* __restrict__ Ci) {
  const int lane = threadIdx.x & 31;
  const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (j >= n) return;
  const int chunks = k_pad / 16;
  const int4* w = reinterpret_cast<const int4*>(B + int64_t(j) * k_pad);
  int acc[M];
  float facc[M];
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = 0, facc[i] = 0.f;
  // Lanes hold consecutive 16-byte chunks, so a scale group (32 / 64 / 128) is an
  // aligned run of seg = group / 16 lanes: its int32 sum is exact (a segmented
  // shuffle reduction) before the one multiply by its scale, as on the CPU.
  const int seg = GROUPED ? group / 16 : 1;
  for (int base = 0; base < chunks; base += 32) {
    const int c = base + lane;
    const bool valid = c < chunks;
    const int4 wv = valid ? __ldg(w + c) : make_int4(0, 0, 0, 0);
    float s = 0.f;
    if (GROUPED && valid) s = sb[int64_t(j) * groups + min((c * 16) / group, groups - 1)];
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const int4 av = valid ? __ldg(reinterpret_cast<const int4*>(A + int64_t(i) * k_pad) + c) : make_int4(0, 0, 0, 0);
      int d = dot16(av, wv);
      if (GROUPED) {
        for (int o = 1; o < seg; o <<= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        if ((lane & (seg - 1)) == 0) facc[i] += float(d) * s;
      } else {
        acc[i] += d;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    if (GROUPED) {
      const float v = warp_sum(facc[i]);
      if (lane == 0) C[int64_t(i) * n + j] = v * sa[i] + (bias ? bias[j] : 0.f);
    } else {
      const int v = warp_sum_i(acc[i]);
      if (lane == 0) {
        if (Ci) {
          Ci[int64_t(i) * n + j] = v;
        } else {
          float y = float(v) * sb[j] * sa[i];
          if (bias) y += bias[j];
          C[int64_t(i) * n + j] = y;
        }
      }
    }
  }
}

template <bool GROUPED>
static void launch_gemv(cudaStream_t st, int m, const int8_t* a, const float* sa, const int8_t* b, const float* sb,
                        int n, int k_pad, int group, int groups, const float* bias, float* c, int32_t* ci) {
  const unsigned grid = blocks_for(n, 8);
#define SPARQ_GEMV(MM) \
  gemv_s8_kernel<MM, GROUPED><<<grid, 256, 0, st>>>(a, sa, b, sb, n, k_pad, group, groups, bias, c, ci)
  switch (m) {
    case 1: SPARQ_GEMV(1); break;
    case 2: SPARQ_GEMV(2); break;
    case 3: SPARQ_GEMV(3); break;
    case 4: SPARQ_GEMV(4); break;
    case 5: SPARQ_GEMV(5); break;
    case 6: SPARQ_GEMV(6); break;
    case 7: SPARQ_GEMV(7); break;
    default: SPARQ_GEMV(8); break;
  }
#undef SPARQ_GEMV
}

static Error check_dims(int64_t m, int64_t n, int64_t k_pad) {
  if (m <= 0 || n <= 0 || k_pad <= 0) return bad_arg("gemm: empty shape");
  if (k_pad % 64) return bad_arg("gemm: k_pad must be a multiple of 64");
  if (m > (int64_t(1) << 30) || n > (int64_t(1) << 30) || k_pad > (int64_t(1) << 30))
    return bad_arg("gemm: dimension over 2^30");
  return {};
}

Error gemm_s8(Context* ctx, const int8_t* a, const float* sa, int64_t m, const DeviceS8& b, const float* bias,
              float* c) {
  SPARQ_CUDA_ENTER(ctx);
  if (Error e = check_dims(m, b.n, b.k_pad); !e.ok()) return e;
  const bool grouped = b.groups > 1;
  if (grouped && (b.group < 32 || b.group > 512 || (b.group & (b.group - 1)) || b.groups != (b.k + b.group - 1) / b.group))
    return bad_arg("gemm_s8: scale groups must be 32, 64, 128, 256 or 512 and cover k");
  const int n = int(b.n), kp = int(b.k_pad), g = int(grouped ? b.group : 0), gs = int(b.groups);
  if (m <= 8) {
    if (grouped) launch_gemv<true>(ctx->stream, int(m), a, sa, b.values, b.scales, n, kp, g, gs, bias, c, nullptr);
    else launch_gemv<false>(ctx->stream, int(m), a, sa, b.values, b.scales, n, kp, g, gs, bias, c, nullptr);
  } else {
    const dim3 grid(blocks_for(n, mma::BN), blocks_for(m, mma::BM));
    if (grid.y > 65535) return bad_arg("gemm_s8: m too large for one launch");
    if (grouped)
      gemm_s8_mma_kernel<Epilogue::grouped><<<grid, mma::THREADS, 0, ctx->stream>>>(a, sa, int(m), b.values, b.scales, n, kp,
                                                                                    g, gs, bias, c, nullptr);
    else
      gemm_s8_mma_kernel<Epilogue::per_row><<<grid, mma::THREADS, 0, ctx->stream>>>(a, sa, int(m), b.values, b.scales, n, kp,
                                                                                    0, 1, bias, c, nullptr);
  }
  return finish(ctx, "gemm_s8");
}

Error matmul_s8(Context* ctx, const int8_t* a, int64_t m, const int8_t* b, int64_t n, int64_t k_pad, int32_t* c) {
  SPARQ_CUDA_ENTER(ctx);
  if (Error e = check_dims(m, n, k_pad); !e.ok()) return e;
  if (m <= 8) {
    launch_gemv<false>(ctx->stream, int(m), a, nullptr, b, nullptr, int(n), int(k_pad), 0, 1, nullptr, nullptr, c);
  } else {
    const dim3 grid(blocks_for(n, mma::BN), blocks_for(m, mma::BM));
    if (grid.y > 65535) return bad_arg("matmul_s8: m too large for one launch");
    gemm_s8_mma_kernel<Epilogue::exact_i32><<<grid, mma::THREADS, 0, ctx->stream>>>(
        a, nullptr, int(m), b, nullptr, int(n), int(k_pad), 0, 1, nullptr, nullptr, c);
  }
  return finish(ctx, "matmul_s8");
}

size_t scratch_bytes_linear_s8(int64_t m, int64_t k_pad) {
  return size_t((m * k_pad + 255) / 256 * 256 + m * 4);
}

Error linear_s8(Context* ctx, const float* x, int64_t m, const DeviceS8& w, const float* bias, float static_scale,
                void* scratch, float* y) {
  int8_t* q = static_cast<int8_t*>(scratch);
  float* s = reinterpret_cast<float*>(q + (m * w.k_pad + 255) / 256 * 256);
  if (Error e = quantize_rows(ctx, x, m, w.k, w.k_pad, static_scale, q, s); !e.ok()) return e;
  return gemm_s8(ctx, q, s, m, w, bias, y);
}

// --- f32 linear --------------------------------------------------------------------
// m <= 8: one warp per output column. Larger m: 64 x 64 tiles, 4 x 4 per thread.
template <int M>
__global__ void __launch_bounds__(256) gemv_f32_kernel(const float* __restrict__ x, int k, const float* __restrict__ w,
                                                       int n, const float* __restrict__ bias, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (j >= n) return;
  const float* wr = w + int64_t(j) * k;
  float acc[M];
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = 0.f;
  for (int q = lane; q < k; q += 32) {
    const float wv = __ldg(wr + q);
#pragma unroll
    for (int i = 0; i < M; ++i) acc[i] = fmaf(__ldg(x + int64_t(i) * k + q), wv, acc[i]);
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    const float v = warp_sum(acc[i]);
    if (lane == 0) y[int64_t(i) * n + j] = v + (bias ? bias[j] : 0.f);
  }
}

__global__ void __launch_bounds__(256) sgemm_nt_kernel(const float* __restrict__ x, int m, int k,
                                                       const float* __restrict__ w, int n,
                                                       const float* __restrict__ bias, float* __restrict__ y) {
  constexpr int T = 64, BKF = 16;
  __shared__ float xs[BKF][T + 4];
  __shared__ float ws[BKF][T + 4];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int m0 = blockIdx.y * T, n0 = blockIdx.x * T;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += BKF) {
    for (int e = threadIdx.x; e < T * BKF; e += 256) {
      const int r = e / BKF, kk = e % BKF;
      const int gk = k0 + kk;
      xs[kk][r] = (m0 + r < m && gk < k) ? x[int64_t(m0 + r) * k + gk] : 0.f;
      ws[kk][r] = (n0 + r < n && gk < k) ? w[int64_t(n0 + r) * k + gk] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BKF; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i], b[i] = ws[kk][tx * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = m0 + ty * 4 + i;
    if (r >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = n0 + tx * 4 + j;
      if (c < n) y[int64_t(r) * n + c] = acc[i][j] + (bias ? bias[c] : 0.f);
    }
  }
}

Error linear_f32(Context* ctx, const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias,
                 float* y) {
  SPARQ_CUDA_ENTER(ctx);
  if (m <= 0 || n <= 0 || k <= 0) return bad_arg("linear_f32: empty shape");
  if (m > (int64_t(1) << 30) || n > (int64_t(1) << 30) || k > (int64_t(1) << 30))
    return bad_arg("linear_f32: dimension over 2^30");
  const int K = int(k), N = int(n);
  if (m <= 8) {
    const unsigned grid = blocks_for(n, 8);
    switch (m) {
      case 1: gemv_f32_kernel<1><<<grid, 256, 0, ctx->stream>>>(x, K, w, N, bias, y); break;
      case 2: gemv_f32_kernel<2><<<grid, 256, 0, ctx->stream>>>(x, K, w, N, bias, y); break;
      case 3: gemv_f32_kernel<3><<<grid, 256, 0, ctx->stream>>>(x, K, w, N, bias, y); break;
      case 4: gemv_f32_kernel<4><<<grid, 256, 0, ctx->stream>>>(x, K, w, N, bias, y); break;
      default: {
        // 5..8 rows: two launches of up to 4
        gemv_f32_kernel<4><<<grid, 256, 0, ctx->stream>>>(x, K, w, N, bias, y);
        const int rest = int(m) - 4;
        const float* x2 = x + 4 * k;
        float* y2 = y + 4 * n;
        if (rest == 1) gemv_f32_kernel<1><<<grid, 256, 0, ctx->stream>>>(x2, K, w, N, bias, y2);
        else if (rest == 2) gemv_f32_kernel<2><<<grid, 256, 0, ctx->stream>>>(x2, K, w, N, bias, y2);
        else if (rest == 3) gemv_f32_kernel<3><<<grid, 256, 0, ctx->stream>>>(x2, K, w, N, bias, y2);
        else gemv_f32_kernel<4><<<grid, 256, 0, ctx->stream>>>(x2, K, w, N, bias, y2);
      }
    }
  } else {
    const dim3 grid(blocks_for(n, 64), blocks_for(m, 64));
    if (grid.y > 65535) return bad_arg("linear_f32: m too large for one launch");
    sgemm_nt_kernel<<<grid, 256, 0, ctx->stream>>>(x, int(m), K, w, N, bias, y);
  }
  return finish(ctx, "linear_f32");
}

}  // namespace cuda
}  // namespace sparq
