// cuda_host.cpp - the CUDA kernel library's API (sparq/cuda.h) on host memory,
// for tests on machines without a GPU: "device" pointers are host memory and
// the ops are the CPU library's (linear_s8 a plain loop). Linked instead of
// the real library or the stub (test_backends), it runs the model's CUDA
// backend (native/model/backend_cuda.cpp) - its uploads, buffers, offsets,
// biases, positions and copies - against the CPU backend. What it cannot check
// is the CUDA kernels themselves (test/cuda.test.ts does, on a GPU).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "sparq/cuda.h"
#include "sparq/sparq.h"

namespace sparq {

CudaInfo cuda_info() {
  CudaInfo info;
  info.error = "host memory standing in for a device (tests)";
  return info;
}

namespace cuda {

struct Context {
  int device = 0;
};

namespace {
std::mutex g_mu;
std::map<void*, size_t> g_live;  // allocations and their sizes
int64_t g_bytes = 0;
Error unsupported(const char* what) { return Error::make(Status::unsupported, std::string("cuda (host): ") + what + " is not emulated"); }
KvType kv_type(DType t) { return t == DType::f16 ? KvType::f16 : t == DType::i8 ? KvType::i8 : KvType::f32; }
}  // namespace

Error context_create(int device, Context** out) {
  *out = new Context{device};
  return {};
}
void context_destroy(Context* ctx) { delete ctx; }
int context_device(const Context* ctx) { return ctx ? ctx->device : 0; }
void context_set_blocking(Context*, bool) {}
Error synchronize(Context*) { return {}; }

Error device_alloc(Context*, size_t bytes, void** out) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) return Error::make(Status::out_of_memory, "cuda (host): out of memory");
  std::lock_guard<std::mutex> lock(g_mu);
  g_live[p] = bytes;
  g_bytes += int64_t(bytes);
  *out = p;
  return {};
}
void device_free(Context*, void* p, size_t) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_live.find(p);
  if (it == g_live.end()) return;  // freed twice or never allocated here: device_allocated_bytes shows it
  g_bytes -= int64_t(it->second);
  g_live.erase(it);
  std::free(p);
}
int64_t device_allocated_bytes() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_bytes;
}
Error mem_info(Context*, size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = size_t(1) << 34;
  return {};
}
Error copy_h2d(Context*, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return {};
}
Error copy_d2h(Context*, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return {};
}
Error copy_d2d(Context*, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
  return {};
}
Error memset_zero(Context*, void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
  return {};
}
Error copy_2d(Context*, void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
  for (size_t r = 0; r < height; ++r) std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return {};
}

Error DeviceBuffers::alloc(Context* ctx, size_t bytes, void** out) {
  if (ctx_ && ctx_ != ctx) return Error::make(Status::internal, "cuda: one DeviceBuffers set per context");
  if (Error e = device_alloc(ctx, bytes, out); !e.ok()) return e;
  ctx_ = ctx;
  v_.emplace_back(*out, bytes);
  bytes_ += bytes;
  return {};
}
Error DeviceBuffers::upload(Context* ctx, const void* host, size_t bytes, void** out) {
  if (Error e = alloc(ctx, bytes, out); !e.ok()) return e;
  return copy_h2d(ctx, *out, host, bytes);
}
void DeviceBuffers::release() {
  for (auto& p : v_) device_free(ctx_, p.first, p.second);
  v_.clear();
  bytes_ = 0;
}

Error quantize_rows(Context*, const float*, int64_t, int64_t, int64_t, float, int8_t*, float*) { return unsupported("quantize_rows"); }
Error gemm_s8(Context*, const int8_t*, const float*, int64_t, const DeviceS8&, const float*, float*) { return unsupported("gemm_s8"); }
Error matmul_s8(Context*, const int8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*) { return unsupported("matmul_s8"); }
size_t scratch_bytes_linear_s8(int64_t, int64_t) { return 0; }
// The contract of sparq/cuda.h: x quantized per row (max|x| / 127, or the static
// scale; rounded as the CPU rounds, x times 1 / scale, so that both backends give
// the same codes), int32 sums per group times the weight's group scales.
Error linear_s8(Context*, const float* x, int64_t m, const DeviceS8& w, const float* bias, float static_scale, void*, float* y) {
  std::vector<int8_t> q(size_t(w.k));
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * w.k;
    float mx = 0.f;
    for (int64_t c = 0; c < w.k; ++c) mx = std::fmax(mx, std::fabs(xr[c]));
    const float s = static_scale > 0.f ? static_scale : mx > 0.f ? mx / 127.f : 1.f, inv = 1.f / s;
    for (int64_t c = 0; c < w.k; ++c) {
      const float v = std::nearbyint(xr[c] * inv);  // as the CPU's quant_rows (ref/quant_rows_ref.cpp)
      q[size_t(c)] = int8_t(v > 127.f ? 127.f : v < -127.f ? -127.f : v);
    }
    const int64_t group = w.group ? w.group : w.k;
    for (int64_t j = 0; j < w.n; ++j) {
      const int8_t* wr = w.values + j * w.k_pad;
      float acc = 0.f;
      for (int64_t g = 0; g < w.groups; ++g) {
        int32_t sum = 0;
        for (int64_t c = g * group; c < std::min(w.k, (g + 1) * group); ++c) sum += int32_t(q[size_t(c)]) * wr[c];
        acc += float(sum) * w.scales[j * w.groups + g];
      }
      y[i * w.n + j] = acc * s + (bias ? bias[j] : 0.f);
    }
  }
  return {};
}
Error linear_f32(Context*, const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* y) {
  return sparq::linear_f32(x, m, k, w, n, bias, y);
}
Error rmsnorm(Context*, const float* x, const float* w, int64_t rows, int64_t d, float eps, float* y) { return sparq::rmsnorm(x, w, rows, d, eps, y); }
Error softmax(Context*, const float* x, int64_t rows, int64_t n, float* y) { return sparq::softmax(x, rows, n, y); }
Error swiglu(Context*, const float* a, const float* b, int64_t n, float* y) { return sparq::swiglu(a, b, n, y); }
Error swiglu_rows(Context*, const float* h13, int64_t n, int64_t hidden, float* y) { return sparq::swiglu_rows(h13, n, hidden, y); }
Error add(Context*, const float* a, const float* b, int64_t n, float* y) { return sparq::add(a, b, n, y); }
Error to_heads(Context*, const float* x, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < h; ++i) std::memcpy(y + (i * n + t) * hd, x + t * ld + i * hd, size_t(hd) * 4);
  return {};
}
Error from_heads(Context*, const float* x, int64_t n, int64_t h, int64_t hd, float* y) {
  for (int64_t i = 0; i < h; ++i)
    for (int64_t t = 0; t < n; ++t) std::memcpy(y + (t * h + i) * hd, x + (i * n + t) * hd, size_t(hd) * 4);
  return {};
}
Error rope(Context*, const float* x, int64_t bh, int64_t t, int64_t d, int64_t pos0, float theta, bool neox, float* y,
           const float* freq_factors) {
  std::vector<float> cs(size_t(t * (d / 2))), sn(cs.size());
  if (Error e = rope_table(t, d, pos0, theta, freq_factors, cs.data(), sn.data()); !e.ok()) return e;
  rope_apply(x, bh, t, d, neox, cs.data(), sn.data(), y);
  return {};
}
size_t scratch_bytes_attention(Context*, const Attention&) { return 0; }
Error attention(Context*, const Attention& a, void*, size_t) {
  if (a.q_type != DType::f32) return unsupported("attention on f16 / bf16 queries");
  AttentionArgs c;
  c.q = static_cast<const float*>(a.q);
  c.b = a.b, c.hq = a.hq, c.tq = a.tq, c.d = a.d;
  c.kv.type = kv_type(a.kv_type);
  c.kv.k = a.k, c.kv.v = a.v, c.kv.k_scale = a.k_scale, c.kv.v_scale = a.v_scale, c.kv.cap = a.cap;
  c.hkv = a.hkv, c.tk = a.tk;
  c.mask = a.mask, c.mask_sb = a.mask_sb, c.mask_sh = a.mask_sh;
  c.scale = a.scale;
  c.causal = a.causal;
  c.out = static_cast<float*>(a.out);
  return sparq::attention(c);
}
Error kv_store(Context*, const float* src, int64_t b, int64_t h, int64_t t, int64_t d, DType type, void* dst, float* scale,
               int64_t cap, int64_t pos) {
  return sparq::kv_store(src, b, h, t, d, kv_type(type), dst, scale, cap, pos);
}
Error spmm_csr(Context*, const DeviceCsr&, const float*, int64_t, const float*, float*) { return unsupported("spmm_csr"); }
Error spmm_nm(Context*, const DeviceNm&, const float*, int64_t, const float*, float*) { return unsupported("spmm_nm"); }
Error embed(Context*, const float* table, int64_t dim, const int32_t* tokens, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * dim, table + int64_t(tokens[i]) * dim, size_t(dim) * 4);
  return {};
}
Error bench_gemm_s8(int, int64_t, int64_t, int64_t, int64_t, int, double*) { return unsupported("bench_gemm_s8"); }
Error bench_attention(int, const Attention&, int, double*) { return unsupported("bench_attention"); }

}  // namespace cuda
}  // namespace sparq
