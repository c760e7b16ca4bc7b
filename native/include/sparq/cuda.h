// sparq/cuda.h - the CUDA backend's C++ API (no Node types, no CUDA headers).
//
// Every function returns an Error; none throws or aborts. In a build without
// CUDA (or on a machine without a driver / device) every call fails with a
// message saying why, so callers need no #ifdefs.
//
// Execution model: a Context owns one device and one CUDA stream. Ops enqueue
// their kernels on the context's stream and wait for it before returning, so
// they are synchronous from the caller's thread (the addon calls them from
// worker threads, never from the JS thread). Several threads may share a
// context; their kernels interleave on its stream.
//
// All pointers passed to ops are device pointers unless named host_*.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sparq/sparq.h"

namespace sparq {
namespace cuda {

struct Context;  // opaque: device ordinal + stream

// Opens `device` (0-based). Fails with the runtime's reason when no device exists.
Error context_create(int device, Context** out);
void context_destroy(Context* ctx);
int context_device(const Context* ctx);
// A context whose ops do not wait for their kernels (a model's forward pass
// queues every kernel of a step, then calls synchronize once). Default: wait.
void context_set_blocking(Context* ctx, bool blocking);
Error synchronize(Context* ctx);

// --- memory -----------------------------------------------------------------
// Device allocations are 256-byte aligned, stream-ordered on the context's
// stream (cudaMallocAsync / cudaFreeAsync where the device has memory pools,
// else cudaMalloc / cudaFree): neither waits for the device, and a block freed
// while queued kernels still use it is released after them. Requests above the
// device's free memory are refused with an error, never a crash.
Error device_alloc(Context* ctx, size_t bytes, void** out);
void device_free(Context* ctx, void* p, size_t bytes);
// Bytes currently held by sparq device allocations (all devices; leak checks).
int64_t device_allocated_bytes();
// free / total bytes of the context's device
Error mem_info(Context* ctx, size_t* free_bytes, size_t* total_bytes);
// Copies on the context's stream; they return when the copy is done.
// memset_zero queues the fill and does not wait (later work on the stream sees it).
Error copy_h2d(Context* ctx, void* dst, const void* host_src, size_t bytes);
Error copy_d2h(Context* ctx, void* host_dst, const void* src, size_t bytes);
Error copy_d2d(Context* ctx, void* dst, const void* src, size_t bytes);
Error memset_zero(Context* ctx, void* dst, size_t bytes);
// height rows of width bytes, rows dpitch / spitch bytes apart (device to device)
Error copy_2d(Context* ctx, void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height);

// Device allocations of one context freed together, with their byte count.
class DeviceBuffers {
 public:
  DeviceBuffers() = default;
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;
  ~DeviceBuffers() { release(); }
  Error alloc(Context* ctx, size_t bytes, void** out);
  // Allocates and fills from host memory.
  Error upload(Context* ctx, const void* host, size_t bytes, void** out);
  void release();
  size_t bytes() const { return bytes_; }

 private:
  Context* ctx_ = nullptr;  // the context the blocks were allocated on (outlives them)
  std::vector<std::pair<void*, size_t>> v_;
  size_t bytes_ = 0;
};

// --- element types ------------------------------------------------------------
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, i8 = 3 };

// --- int8 GEMM ---------------------------------------------------------------
// A device int8 weight [n, k] in nn.Linear layout: row-major values with rows
// padded to k_pad = round_up(k, 64) (zeros), symmetric scales [n, groups]
// (groups = ceil(k / group); group 0 = one scale per row). Same contract as the
// CPU's PackedS8: W[j, q] ~= scale[j, q / group] * values[j, q].
struct DeviceS8 {
  int64_t n = 0, k = 0, k_pad = 0, group = 0, groups = 1;
  int8_t* values = nullptr;  // [n, k_pad]
  float* scales = nullptr;   // [n, groups]
};

// Dynamic per-row int8 quantization of x [m, k] (f32) into q [m, k_pad] (rows
// zero-padded) and scale [m]: scale = max|x| / 127 (1 for an all-zero row),
// q = clamp(nearbyint(x / scale), -127, 127) - the CPU's QuantRowsArgs contract.
// static_scale > 0 uses that scale for every row instead.
Error quantize_rows(Context* ctx, const float* x, int64_t m, int64_t k, int64_t k_pad, float static_scale,
                    int8_t* q, float* scale);

// C[m, n] = sa[m] * sum_g sb[n, g] * sum_{q in g} A[m, q] * B[n, q] (+ bias[n]), with
// int32 accumulation per group. A [m, k_pad] int8 (padded with zeros). Tensor-core
// (mma.sync m16n8k32) tiles for m > 8, a dp4a GEMV for m <= 8.
Error gemm_s8(Context* ctx, const int8_t* a, const float* sa, int64_t m, const DeviceS8& b, const float* bias,
              float* c);
// Exact int32 C[m, n] = A[m, k] . B[n, k]^T (A, B row-major int8 with leading
// dimension k_pad, a multiple of 64, padding zero).
Error matmul_s8(Context* ctx, const int8_t* a, int64_t m, const int8_t* b, int64_t n, int64_t k_pad, int32_t* c);
// y[m, n] = x[m, k] . w^T + bias: quantizes x per row (or with static_scale),
// then gemm_s8. `scratch` needs scratch_bytes_linear_s8(m, k) bytes.
size_t scratch_bytes_linear_s8(int64_t m, int64_t k_pad);
Error linear_s8(Context* ctx, const float* x, int64_t m, const DeviceS8& w, const float* bias, float static_scale,
                void* scratch, float* y);
// f32: y[m, n] = x[m, k] . w[n, k]^T + bias (SIMT; f32 accumulate)
Error linear_f32(Context* ctx, const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias,
                 float* y);

// --- small ops (f32) -----------------------------------------------------------
Error rmsnorm(Context* ctx, const float* x, const float* w, int64_t rows, int64_t d, float eps, float* y);
Error softmax(Context* ctx, const float* x, int64_t rows, int64_t n, float* y);
Error swiglu(Context* ctx, const float* a, const float* b, int64_t n, float* y);
// h13 [n, 2 * hidden] (gate | up per row) -> silu(gate) * up [n, hidden]
Error swiglu_rows(Context* ctx, const float* h13, int64_t n, int64_t hidden, float* y);
// [n, h, hd] (rows `ld` floats apart) -> [h, n, hd], and back ([h, n, hd] -> [n, h * hd])
Error to_heads(Context* ctx, const float* x, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y);
Error from_heads(Context* ctx, const float* x, int64_t n, int64_t h, int64_t hd, float* y);
Error add(Context* ctx, const float* a, const float* b, int64_t n, float* y);
// x (bh, t, d) -> y, row t at position pos0 + t (see sparq::rope; freq_factors in device memory)
Error rope(Context* ctx, const float* x, int64_t bh, int64_t t, int64_t d, int64_t pos0, float theta, bool neox,
           float* y, const float* freq_factors = nullptr);

// --- attention -----------------------------------------------------------------
// The CPU's AttentionArgs contract (causal bottom-right, GQA, additive mask,
// zeros for a row that sees no key) on device memory. q and out have type
// q_type (f32 / f16 / bf16), keys / values kv_type (f32 / f16 / bf16 / i8 with
// f32 scales [b, hkv, cap]). Scores, softmax and P.V accumulate in f32. Long
// key ranges with few query rows (decode) are split across blocks and merged.
// d <= 256.
struct Attention {
  const void* q = nullptr;
  DType q_type = DType::f32;
  int64_t b = 0, hq = 0, tq = 0, d = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  DType kv_type = DType::f32;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  int64_t hkv = 0, tk = 0, cap = 0;  // keys [b, hkv, cap, d], rows < tk used
  const float* mask = nullptr;
  int64_t mask_sb = 0, mask_sh = 0;
  float scale = 0.f;
  bool causal = false;
  void* out = nullptr;  // [b, hq, tq, d] of q_type
};
// Scratch for the split-KV partials (0 when the key range is not split).
// attention() never writes past scratch_bytes: it splits less to fit.
size_t scratch_bytes_attention(Context* ctx, const Attention& a);
Error attention(Context* ctx, const Attention& a, void* scratch, size_t scratch_bytes);
// Writes src [b, h, t, d] (f32) into rows [pos, pos + t) of a [b, h, cap, d]
// store of type `type` (i8: per-row scales into scale [b, h, cap]).
Error kv_store(Context* ctx, const float* src, int64_t b, int64_t h, int64_t t, int64_t d, DType type, void* dst,
               float* scale, int64_t cap, int64_t pos);

// --- sparse ----------------------------------------------------------------------
// CSR weight [n, k] on the device: row_ptr [n + 1] (int32), col [nnz] (int32),
// values f32 or int8 with one f32 scale per row.
struct DeviceCsr {
  int64_t n = 0, k = 0, nnz = 0;
  const int32_t* row_ptr = nullptr;
  const int32_t* col = nullptr;
  const float* vf = nullptr;
  const int8_t* vq = nullptr;
  const float* scale = nullptr;
};
// y[m, n] = x[m, k] . W^T + bias (f32 activations; int8 values dequantized per row)
Error spmm_csr(Context* ctx, const DeviceCsr& w, const float* x, int64_t m, const float* bias, float* y);
// N:M structured weight [n, k] (2:4, 4:8): exactly N values per group of M along
// k, values [n, groups * N] (f32, or int8 with a scale per row), in-group indices
// packed `bits` bits each, rows of row_bytes (the CPU's SparseWeight nm layout).
// SIMT kernel: the values and indices stream once; sparse tensor cores are not used.
struct DeviceNm {
  int64_t n = 0, k = 0, groups = 0, row_bytes = 0;
  int N = 0, M = 0, bits = 0;
  const uint8_t* idx = nullptr;
  const float* vf = nullptr;
  const int8_t* vq = nullptr;
  const float* scale = nullptr;
};
Error spmm_nm(Context* ctx, const DeviceNm& w, const float* x, int64_t m, const float* bias, float* y);

// --- embedding ---------------------------------------------------------------------
// y[i, :] = table[tokens[i], :] (tokens checked on the host beforehand)
Error embed(Context* ctx, const float* table, int64_t dim, const int32_t* tokens, int64_t n, float* y);

// --- benchmarks ------------------------------------------------------------------
// Mean milliseconds per call over `reps` back-to-back calls (CUDA events), on
// inputs generated on the device. gemm: C = A . W^T with A [m, k] int8 (already
// quantized), W int8 [n, k] per channel (group 0) or per group.
Error bench_gemm_s8(int device, int64_t m, int64_t n, int64_t k, int64_t group, int reps, double* ms);
// attention: shapes, types and flags from `shape` (pointers ignored)
Error bench_attention(int device, const Attention& shape, int reps, double* ms);

}  // namespace cuda
}  // namespace sparq
