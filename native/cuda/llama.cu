// llama.cu - the Llama forward pass on a CUDA device (see llama_cuda.h). The
// same steps as native/model/llama.cpp: every kernel of a step is queued on
// the model's own non-blocking context and the host waits once, when the
// logits come back.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../model/llama_cuda.h"
#include "common.cuh"

namespace sparq {

namespace {

// [n, h, hd] (token rows `ld` floats apart) -> [h, n, hd]
__global__ void to_heads_kernel(const float* __restrict__ x, int64_t ld, int64_t n, int64_t h, int64_t hd,
                                float* __restrict__ y) {
  const int64_t total = n * h * hd;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % hd, t = (e / hd) % n, hh = e / (hd * n);
    y[e] = x[t * ld + hh * hd + c];
  }
}

// [h, n, hd] -> [n, h * hd]
__global__ void from_heads_kernel(const float* __restrict__ x, int64_t n, int64_t h, int64_t hd, float* __restrict__ y) {
  const int64_t total = n * h * hd;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % hd, hh = (e / hd) % h, t = e / (hd * h);
    y[e] = x[(hh * n + t) * hd + c];
  }
}

// [n, 2 * hidden] (gate | up per token) -> silu(gate) * up [n, hidden]
__global__ void swiglu_fused_kernel(const float* __restrict__ h13, int64_t n, int64_t hidden, float* __restrict__ y) {
  const int64_t total = n * hidden;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / hidden, i = e % hidden;
    const float a = h13[t * 2 * hidden + i], b = h13[t * 2 * hidden + hidden + i];
    y[e] = a / (1.f + expf(-a)) * b;
  }
}

unsigned grid_for(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return unsigned(b < 65536 ? b : 65536);
}

cuda::DType kv_dtype(KvType t) {
  return t == KvType::f16 ? cuda::DType::f16 : t == KvType::i8 ? cuda::DType::i8 : cuda::DType::f32;
}

}  // namespace

struct CudaLlama::Impl {
  cuda::Context* ctx = nullptr;  // own stream, non-blocking ops
  LlamaConfig cfg;
  DeviceBuffers mem;             // embedding, norms, cache
  const float* embed = nullptr;
  const float* final_norm = nullptr;
  const float* rope_freqs = nullptr;
  struct Layer {
    const float* attn_norm = nullptr;
    const float* ffn_norm = nullptr;
    const float *bqkv = nullptr, *q_norm = nullptr, *k_norm = nullptr;  // biases q | k | v; per-head norms
    std::unique_ptr<DeviceLinear> wqkv, wq, wk, wv, wo, w13, w1, w3, w2;
  };
  std::vector<Layer> layers;
  std::unique_ptr<DeviceLinear> output;
  std::vector<void*> k, v;
  std::vector<float*> ks, vs;
  // activations for chunks of up to `cap_n` tokens
  DeviceBuffers act;
  int64_t cap_n = 0;
  float *x = nullptr, *xb = nullptr, *tmp = nullptr, *qkv = nullptr, *qt = nullptr, *kt = nullptr, *vt = nullptr,
        *att = nullptr, *h13 = nullptr, *h1 = nullptr, *h3 = nullptr, *logits = nullptr;
  int32_t* tok = nullptr;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;

  ~Impl() {
    act.release();
    mem.release();
    for (auto& l : layers)
      for (auto* w : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w13, &l.w1, &l.w3, &l.w2}) w->reset();
    output.reset();
    cuda::context_destroy(ctx);
  }

  Error reserve(int64_t n) {
    if (n <= cap_n) return {};
    act.release();
    cap_n = 0;
    const LlamaConfig& c = cfg;
    const int64_t hd = c.head_dim, qd = c.heads * hd, kvd = c.kv_heads * hd, qkvd = qd + 2 * kvd;
    auto f = [&](float** p, int64_t count) {
      void* q = nullptr;
      Error e = act.alloc(ctx, size_t(count) * 4, &q);
      *p = static_cast<float*>(q);
      return e;
    };
    SPARQ_TRY(f(&x, n * c.dim));
    SPARQ_TRY(f(&xb, n * c.dim));
    SPARQ_TRY(f(&tmp, n * c.dim));
    SPARQ_TRY(f(&qkv, n * qkvd));
    SPARQ_TRY(f(&qt, n * qd));
    SPARQ_TRY(f(&kt, n * kvd));
    SPARQ_TRY(f(&vt, n * kvd));
    SPARQ_TRY(f(&att, n * qd));
    SPARQ_TRY(f(&h13, n * 2 * c.hidden));
    SPARQ_TRY(f(&h1, n * c.hidden));
    SPARQ_TRY(f(&h3, n * c.hidden));
    SPARQ_TRY(f(&logits, n * c.vocab));
    void* t = nullptr;
    SPARQ_TRY(act.alloc(ctx, size_t(n) * 4, &t));
    tok = static_cast<int32_t*>(t);
    // scratch: the largest linear's activation quantization, or split-KV partials
    size_t need = 0;
    auto lin = [&](const std::unique_ptr<DeviceLinear>& w) {
      if (w) need = std::max(need, w->scratch_bytes(n));
    };
    for (auto& l : layers)
      for (auto* w : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w13, &l.w1, &l.w3, &l.w2}) lin(*w);
    lin(output);
    // split-KV partials: the most any chunk of up to n tokens can ask for (the
    // split count is not monotone in the chunk length)
    cuda::Attention a;
    a.b = 1, a.hq = c.heads, a.d = hd, a.hkv = c.kv_heads, a.tk = c.max_seq, a.cap = c.max_seq;
    for (int64_t t = 1; t <= n; ++t) {
      a.tq = t;
      need = std::max(need, cuda::scratch_bytes_attention(ctx, a));
    }
    scratch_bytes = need;
    scratch = nullptr;
    if (need) SPARQ_TRY(act.alloc(ctx, need, &scratch));
    cap_n = n;
    return {};
  }
};

CudaLlama::~CudaLlama() = default;

size_t CudaLlama::device_bytes() const {
  if (!impl_) return 0;
  size_t b = impl_->mem.bytes() + impl_->act.bytes();
  for (auto& l : impl_->layers)
    for (auto* w : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w13, &l.w1, &l.w3, &l.w2})
      if (*w) b += (*w)->mem.bytes();
  if (impl_->output) b += impl_->output->mem.bytes();
  return b;
}

Error CudaLlama::create(cuda::Context* shared, const LlamaConfig& cfg, const LlamaWeights& w,
                        std::unique_ptr<CudaLlama>* out) {
  std::unique_ptr<CudaLlama> m(new CudaLlama());
  m->impl_.reset(new Impl());
  Impl& I = *m->impl_;
  if (cfg.head_dim > 256) return Error::make(Status::unsupported, "cuda: head dimensions over 256 run on the CPU only");
  SPARQ_TRY(cuda::context_create(cuda::context_device(shared), &I.ctx));
  cuda::context_set_blocking(I.ctx, false);
  I.cfg = cfg;
  const LlamaConfig& c = cfg;
  const int64_t hd = c.head_dim, kvd = c.kv_heads * hd;
  void* p = nullptr;
  {  // the embedding's f32 rows (GGUF blocks as their exact f32 values)
    std::vector<float> staging;
    const float* rows = nullptr;
    if (w.embed.format->device != DeviceForm::f32) return Error::make(Status::unsupported, "cuda: the embedding must be f32 or GGUF blocks");
    SPARQ_TRY(w.embed.format->device_f32(w.embed, &staging, &rows));
    SPARQ_TRY(I.mem.upload(I.ctx, rows, size_t(c.vocab * c.dim) * 4, &p));
  }
  I.embed = static_cast<float*>(p);
  SPARQ_TRY(I.mem.upload(I.ctx, w.final_norm, size_t(c.dim) * 4, &p));
  I.final_norm = static_cast<float*>(p);
  const int64_t qd = c.heads * hd;
  if (w.rope_freqs) {
    SPARQ_TRY(I.mem.upload(I.ctx, w.rope_freqs, size_t(hd / 2) * 4, &p));
    I.rope_freqs = static_cast<float*>(p);
  }
  auto up = [&](const LinearWeight& lw, std::unique_ptr<DeviceLinear>* d) -> Error {
    if (!lw.present()) return {};
    return upload_linear(I.ctx, lw, d);
  };
  for (const LlamaLayer& L : w.layers) {
    Impl::Layer D;
    SPARQ_TRY(I.mem.upload(I.ctx, L.attn_norm, size_t(c.dim) * 4, &p));
    D.attn_norm = static_cast<float*>(p);
    SPARQ_TRY(I.mem.upload(I.ctx, L.ffn_norm, size_t(c.dim) * 4, &p));
    D.ffn_norm = static_cast<float*>(p);
    if (L.bq) {  // one device vector q | k | v: the fused linear's bias, or sliced per part
      std::vector<float> b(size_t(qd + 2 * kvd));
      std::copy(L.bq, L.bq + qd, b.begin());
      std::copy(L.bk, L.bk + kvd, b.begin() + qd);
      std::copy(L.bv, L.bv + kvd, b.begin() + qd + kvd);
      SPARQ_TRY(I.mem.upload(I.ctx, b.data(), b.size() * 4, &p));
      D.bqkv = static_cast<float*>(p);
    }
    if (L.q_norm) {
      SPARQ_TRY(I.mem.upload(I.ctx, L.q_norm, size_t(hd) * 4, &p));
      D.q_norm = static_cast<float*>(p);
      SPARQ_TRY(I.mem.upload(I.ctx, L.k_norm, size_t(hd) * 4, &p));
      D.k_norm = static_cast<float*>(p);
    }
    SPARQ_TRY(up(L.wqkv, &D.wqkv));
    SPARQ_TRY(up(L.wq, &D.wq));
    SPARQ_TRY(up(L.wk, &D.wk));
    SPARQ_TRY(up(L.wv, &D.wv));
    SPARQ_TRY(up(L.wo, &D.wo));
    SPARQ_TRY(up(L.w13, &D.w13));
    SPARQ_TRY(up(L.w1, &D.w1));
    SPARQ_TRY(up(L.w3, &D.w3));
    SPARQ_TRY(up(L.w2, &D.w2));
    I.layers.push_back(std::move(D));
  }
  SPARQ_TRY(up(w.output, &I.output));
  const size_t es = c.kv_type == KvType::f32 ? 4 : c.kv_type == KvType::f16 ? 2 : 1;
  const size_t rows = size_t(c.kv_heads * c.max_seq), bytes = rows * size_t(hd) * es;
  (void)kvd;
  for (int64_t l = 0; l < c.layers; ++l) {
    SPARQ_TRY(I.mem.alloc(I.ctx, bytes, &p));
    I.k.push_back(p);
    SPARQ_TRY(I.mem.alloc(I.ctx, bytes, &p));
    I.v.push_back(p);
    if (c.kv_type == KvType::i8) {
      SPARQ_TRY(I.mem.alloc(I.ctx, rows * 4, &p));
      I.ks.push_back(static_cast<float*>(p));
      SPARQ_TRY(I.mem.alloc(I.ctx, rows * 4, &p));
      I.vs.push_back(static_cast<float*>(p));
    } else {
      I.ks.push_back(nullptr);
      I.vs.push_back(nullptr);
    }
  }
  SPARQ_TRY(I.reserve(1));
  *out = std::move(m);
  return {};
}

Error CudaLlama::forward(const int32_t* tokens, int64_t n, int64_t pos, bool all, float* logits) {
  Impl& I = *impl_;
  const LlamaConfig& c = I.cfg;
  cuda::Context* ctx = I.ctx;
  SPARQ_TRY(I.reserve(n));
  const int64_t hd = c.head_dim, kvd = c.kv_heads * hd, dim = c.dim, qd = c.heads * hd, qkvd = qd + 2 * kvd;
  cudaStream_t st = ctx->stream;
  SPARQ_TRY(cuda::copy_h2d(ctx, I.tok, tokens, size_t(n) * 4));
  SPARQ_TRY(cuda::embed(ctx, I.embed, dim, I.tok, n, I.x));
  for (int64_t li = 0; li < c.layers; ++li) {
    const Impl::Layer& L = I.layers[size_t(li)];
    SPARQ_TRY(cuda::rmsnorm(ctx, I.x, L.attn_norm, n, dim, c.norm_eps, I.xb));
    int64_t ld = qkvd;
    float* qp = I.qkv;
    const float* b = L.bqkv;
    if (L.wqkv) {
      SPARQ_TRY(run_linear(ctx, *L.wqkv, I.xb, n, b, I.scratch, qp));
    } else {
      ld = qd;
      SPARQ_TRY(run_linear(ctx, *L.wq, I.xb, n, b, I.scratch, qp));
      SPARQ_TRY(run_linear(ctx, *L.wk, I.xb, n, b ? b + qd : nullptr, I.scratch, qp + n * qd));
      SPARQ_TRY(run_linear(ctx, *L.wv, I.xb, n, b ? b + qd + kvd : nullptr, I.scratch, qp + n * (qd + kvd)));
    }
    const bool fused = ld == qkvd;
    to_heads_kernel<<<grid_for(n * qd), 256, 0, st>>>(qp, ld, n, c.heads, hd, I.qt);
    to_heads_kernel<<<grid_for(n * kvd), 256, 0, st>>>(fused ? qp + qd : qp + n * qd, fused ? ld : kvd, n, c.kv_heads,
                                                      hd, I.kt);
    to_heads_kernel<<<grid_for(n * kvd), 256, 0, st>>>(fused ? qp + qd + kvd : qp + n * (qd + kvd), fused ? ld : kvd, n,
                                                      c.kv_heads, hd, I.vt);
    if (L.q_norm) {
      SPARQ_TRY(cuda::rmsnorm(ctx, I.qt, L.q_norm, c.heads * n, hd, c.norm_eps, I.qt));
      SPARQ_TRY(cuda::rmsnorm(ctx, I.kt, L.k_norm, c.kv_heads * n, hd, c.norm_eps, I.kt));
    }
    SPARQ_TRY(cuda::rope(ctx, I.qt, c.heads, n, hd, pos, c.rope_theta, c.rope_neox, I.qt, I.rope_freqs));
    SPARQ_TRY(cuda::rope(ctx, I.kt, c.kv_heads, n, hd, pos, c.rope_theta, c.rope_neox, I.kt, I.rope_freqs));
    const size_t l = size_t(li);
    const cuda::DType kvt = kv_dtype(c.kv_type);
    SPARQ_TRY(cuda::kv_store(ctx, I.kt, 1, c.kv_heads, n, hd, kvt, I.k[l], I.ks[l], c.max_seq, pos));
    SPARQ_TRY(cuda::kv_store(ctx, I.vt, 1, c.kv_heads, n, hd, kvt, I.v[l], I.vs[l], c.max_seq, pos));
    cuda::Attention a;
    a.q = I.qt;
    a.b = 1, a.hq = c.heads, a.tq = n, a.d = hd;
    a.k = I.k[l], a.v = I.v[l], a.kv_type = kvt, a.k_scale = I.ks[l], a.v_scale = I.vs[l];
    a.hkv = c.kv_heads, a.tk = pos + n, a.cap = c.max_seq;
    a.scale = float(1.0 / std::sqrt(double(hd)));
    a.causal = true;
    a.out = I.att;
    SPARQ_TRY(cuda::attention(ctx, a, I.scratch, I.scratch_bytes));
    from_heads_kernel<<<grid_for(n * qd), 256, 0, st>>>(I.att, n, c.heads, hd, I.qt);
    SPARQ_TRY(run_linear(ctx, *L.wo, I.qt, n, nullptr, I.scratch, I.tmp));
    SPARQ_TRY(cuda::add(ctx, I.x, I.tmp, n * dim, I.x));
    SPARQ_TRY(cuda::rmsnorm(ctx, I.x, L.ffn_norm, n, dim, c.norm_eps, I.xb));
    if (L.w13) {
      SPARQ_TRY(run_linear(ctx, *L.w13, I.xb, n, nullptr, I.scratch, I.h13));
      swiglu_fused_kernel<<<grid_for(n * c.hidden), 256, 0, st>>>(I.h13, n, c.hidden, I.h1);
    } else {
      SPARQ_TRY(run_linear(ctx, *L.w1, I.xb, n, nullptr, I.scratch, I.h1));
      SPARQ_TRY(run_linear(ctx, *L.w3, I.xb, n, nullptr, I.scratch, I.h3));
      SPARQ_TRY(cuda::swiglu(ctx, I.h1, I.h3, n * c.hidden, I.h1));
    }
    SPARQ_TRY(run_linear(ctx, *L.w2, I.h1, n, nullptr, I.scratch, I.tmp));
    SPARQ_TRY(cuda::add(ctx, I.x, I.tmp, n * dim, I.x));
  }
  const int64_t rows = all ? n : 1;
  const float* last = I.x + (all ? 0 : (n - 1) * dim);
  SPARQ_TRY(cuda::rmsnorm(ctx, last, I.final_norm, rows, dim, c.norm_eps, I.xb));
  SPARQ_TRY(run_linear(ctx, *I.output, I.xb, rows, nullptr, I.scratch, I.logits));
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cuda::cuda_error(e, "model forward");
  return cuda::copy_d2h(ctx, logits, I.logits, size_t(rows * c.vocab) * 4);
}

}  // namespace sparq
