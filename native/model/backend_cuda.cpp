// backend_cuda.cpp - the Llama forward pass's ops on a CUDA device (backend.h):
// the weights uploaded once (device_linear.h), a KV cache of one slot and the
// activations in device memory; every op is a CUDA kernel library call
// (sparq/cuda.h) queued on the backend's own non-blocking context, and the host
// waits once, when the logits come back (finish). In a build without CUDA the
// library's calls fail, and so does make_cuda_backend.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "backend.h"
#include "device_linear.h"
#include "sparq/cuda.h"

namespace sparq {

namespace {

cuda::DType kv_dtype(KvType t) {
  return t == KvType::f16 ? cuda::DType::f16 : t == KvType::i8 ? cuda::DType::i8 : cuda::DType::f32;
}

class CudaBackend final : public LlamaBackend {
 public:
  cuda::Context* ctx = nullptr;  // own stream, non-blocking ops
  LlamaConfig cfg;
  cuda::DeviceBuffers mem;             // embedding, norms, cache
  const float* embed_rows = nullptr;
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
  cuda::DeviceBuffers act;
  int64_t cap_n = 0;
  float *x = nullptr, *xb = nullptr, *tmp = nullptr, *qkv = nullptr, *qt = nullptr, *kt = nullptr, *vt = nullptr,
        *att = nullptr, *h13 = nullptr, *h1 = nullptr, *h3 = nullptr, *logits = nullptr;
  int32_t* tok = nullptr;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;

  ~CudaBackend() override {
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

  const LlamaBatch* b = nullptr;  // the batch begun (one sequence, slot 0)

  Error begin(const int32_t* tokens, const LlamaBatch& batch, bool, float*, LlamaActs* a) override {
    if (batch.count != 1 || batch.slot[0] != 0) return Error::make(Status::unsupported, "model: batched decode runs on the CPU");
    b = &batch;
    SPARQ_TRY(reserve(batch.n));
    SPARQ_TRY(cuda::copy_h2d(ctx, tok, tokens, size_t(batch.n) * 4));
    a->x = x, a->xb = xb, a->tmp = tmp;
    a->qkv = qkv, a->qt = qt, a->kt = kt, a->vt = vt, a->att = att;
    a->h1 = h1, a->h3 = h3, a->h13 = h13;
    a->logits = logits;
    return {};
  }
  Error embed(const int32_t*, int64_t n, float* y) override { return cuda::embed(ctx, embed_rows, cfg.dim, tok, n, y); }
  Error rmsnorm(int64_t layer, LlamaNorm which, const float* xin, int64_t rows, int64_t d, float* y) override {
    const float* w = which == LlamaNorm::final ? final_norm
                     : which == LlamaNorm::attn ? layers[size_t(layer)].attn_norm
                     : which == LlamaNorm::ffn  ? layers[size_t(layer)].ffn_norm
                     : which == LlamaNorm::q    ? layers[size_t(layer)].q_norm
                                                : layers[size_t(layer)].k_norm;
    return cuda::rmsnorm(ctx, xin, w, rows, d, cfg.norm_eps, y);
  }
  Error linear(int64_t layer, LlamaLinear which, const float* xin, int64_t m, float* y) override {
    if (which == LlamaLinear::output) return run_linear(ctx, *output, xin, m, nullptr, scratch, y);
    const Layer& L = layers[size_t(layer)];
    const int64_t qd = cfg.heads * cfg.head_dim, kvd = cfg.kv_heads * cfg.head_dim;
    const float* bias = L.bqkv;  // q | k | v
    const std::unique_ptr<DeviceLinear>* w = nullptr;
    switch (which) {
      case LlamaLinear::qkv: w = &L.wqkv; break;
      case LlamaLinear::q: w = &L.wq; break;
      case LlamaLinear::k: w = &L.wk, bias = bias ? bias + qd : nullptr; break;
      case LlamaLinear::v: w = &L.wv, bias = bias ? bias + qd + kvd : nullptr; break;
      case LlamaLinear::o: w = &L.wo, bias = nullptr; break;
      case LlamaLinear::w13: w = &L.w13, bias = nullptr; break;
      case LlamaLinear::w1: w = &L.w1, bias = nullptr; break;
      case LlamaLinear::w3: w = &L.w3, bias = nullptr; break;
      case LlamaLinear::w2: w = &L.w2, bias = nullptr; break;
      default: return Error::make(Status::internal, "model: unknown linear");
    }
    if (!*w) return Error::make(Status::internal, "model: linear not on the device");
    return run_linear(ctx, **w, xin, m, bias, scratch, y);
  }
  Error to_heads(const float* xin, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y) override {
    return cuda::to_heads(ctx, xin, ld, n, h, hd, y);
  }
  Error from_heads(const float* xin, int64_t n, int64_t h, int64_t hd, float* y) override {
    return cuda::from_heads(ctx, xin, n, h, hd, y);
  }
  Error rope(float* xin, int64_t heads, int64_t len, int64_t hd, int64_t seq) override {
    return cuda::rope(ctx, xin, heads, len, hd, b->pos[size_t(seq)], cfg.rope_theta, cfg.rope_neox, xin, rope_freqs);
  }
  Error kv_store(int64_t layer, const float* kin, const float* vin, int64_t seq) override {
    const size_t l = size_t(layer);
    const int64_t len = b->len[size_t(seq)], pos = b->pos[size_t(seq)];
    const cuda::DType t = kv_dtype(cfg.kv_type);
    SPARQ_TRY(cuda::kv_store(ctx, kin, 1, cfg.kv_heads, len, cfg.head_dim, t, k[l], ks[l], cfg.max_seq, pos));
    return cuda::kv_store(ctx, vin, 1, cfg.kv_heads, len, cfg.head_dim, t, v[l], vs[l], cfg.max_seq, pos);
  }
  Error attention(int64_t layer, const float* q, float* out) override {
    const size_t l = size_t(layer);
    cuda::Attention a;
    a.q = q;
    a.b = 1, a.hq = cfg.heads, a.tq = b->n, a.d = cfg.head_dim;
    a.k = k[l], a.v = v[l], a.kv_type = kv_dtype(cfg.kv_type), a.k_scale = ks[l], a.v_scale = vs[l];
    a.hkv = cfg.kv_heads, a.tk = b->k_len[0], a.cap = cfg.max_seq;
    a.scale = float(1.0 / std::sqrt(double(cfg.head_dim)));
    a.causal = true;
    a.out = out;
    return cuda::attention(ctx, a, scratch, scratch_bytes);
  }
  Error add(const float* a, const float* bb, int64_t n, float* y) override { return cuda::add(ctx, a, bb, n, y); }
  Error swiglu(const float* a, const float* bb, int64_t n, float* y) override { return cuda::swiglu(ctx, a, bb, n, y); }
  Error swiglu_rows(const float* g, int64_t n, int64_t hidden, float* y) override { return cuda::swiglu_rows(ctx, g, n, hidden, y); }
  Error observe(const LlamaCalibration&, const float*, int64_t, int64_t, int64_t, int, int64_t, double*) override {
    return Error::make(Status::unsupported, "model: calibration runs on the CPU; calibrate before moving the model to the GPU");
  }
  Error finish(const LlamaActs& a, int64_t rows, float* host) override {
    return cuda::copy_d2h(ctx, host, a.logits, size_t(rows * cfg.vocab) * 4);
  }
  bool synchronous() const override { return false; }
  size_t device_bytes() const override {
    size_t n = mem.bytes() + act.bytes();
    for (auto& l : layers)
      for (auto* w : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w13, &l.w1, &l.w3, &l.w2})
        if (*w) n += (*w)->mem.bytes();
    if (output) n += output->mem.bytes();
    return n;
  }
};

}  // namespace

Error make_cuda_backend(cuda::Context* shared, const LlamaConfig& cfg, const LlamaWeights& w, std::unique_ptr<LlamaBackend>* out) {
  std::unique_ptr<CudaBackend> m(new (std::nothrow) CudaBackend());
  if (!m) return Error::make(Status::out_of_memory, "cuda: out of host memory");
  CudaBackend& I = *m;
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
  I.embed_rows = static_cast<float*>(p);
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
    CudaBackend::Layer D;
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

}  // namespace sparq
