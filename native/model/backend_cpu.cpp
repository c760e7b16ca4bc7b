// backend_cpu.cpp - the Llama forward pass's ops on the CPU (backend.h): the
// CPU kernel library over the model's own weights (not copied), a KV cache of
// max_sequences slots, and activation buffers grown to the largest chunk seen
// and reused (no allocation per token).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../cpu/quants.h"
#include "../cpu/thread_pool.h"
#include "backend.h"

namespace sparq {

namespace {

// [n, h, hd] (token rows `ld` floats apart) -> [h, n, hd]
void to_heads(const float* x, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < h; ++i) std::memcpy(y + (i * n + t) * hd, x + t * ld + i * hd, size_t(hd) * 4);
}
// [h, n, hd] -> [n, h, hd]
void from_heads(const float* x, int64_t n, int64_t h, int64_t hd, float* y) {
  for (int64_t i = 0; i < h; ++i)
    for (int64_t t = 0; t < n; ++t) std::memcpy(y + (t * h + i) * hd, x + (i * n + t) * hd, size_t(hd) * 4);
}

// gram [cols, cols] += x^T x for x [rows, cols]: blocks of up to 256 rows
// multiplied by the f32 GEMM (sums of at most 256 products), added up in f64.
Error accumulate_gram(const float* x, int64_t rows, int64_t cols, double* gram) {
  constexpr int64_t kRows = 256;
  std::vector<float> xt, c;
  try {
    xt.resize(size_t(cols * std::min(rows, kRows)));
    c.resize(size_t(cols * cols));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "calibration: out of memory for X^T X");
  }
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t r = 0; r < nr; ++r) xt[size_t(a * nr + r)] = x[(r0 + r) * cols + a];
    SPARQ_TRY(linear_f32(xt.data(), cols, nr, xt.data(), cols, nullptr, c.data()));  // c[a, b] = sum_r x[r, a] x[r, b]
    parallel_for(cols, [&](int64_t a) {
      for (int64_t b = 0; b < cols; ++b) gram[a * cols + b] += double(c[size_t(a * cols + b)]);
    });
  }
  return Error{};
}

// Records x [rows, cols], input `input` of layer `layer` whose features start at
// `feat` (per-feature arrays) into the calibration arrays that are set.
Error observe(const LlamaCalibration& cal, const float* x, int64_t rows, int64_t cols, int64_t layer, int input, int64_t feat,
              double* gram) {
  const int64_t slot = layer * 4 + input;
  if (gram && layer == cal.gram_layer) SPARQ_TRY(accumulate_gram(x, rows, cols, gram));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    if (cal.sumsq)
      for (int64_t c = 0; c < cols; ++c) cal.sumsq[feat + c] += double(xr[c]) * xr[c];
    if (cal.amax)
      for (int64_t c = 0; c < cols; ++c) cal.amax[feat + c] = std::fmax(cal.amax[feat + c], std::fabs(xr[c]));
    if (cal.lo)
      for (int64_t c = 0; c < cols; ++c) {
        cal.lo[slot] = std::fmin(cal.lo[slot], xr[c]);
        cal.hi[slot] = std::fmax(cal.hi[slot], xr[c]);
      }
    if (cal.hist) {
      const float a = cal.range[2 * slot], b = cal.range[2 * slot + 1];
      const double w = b > a ? double(cal.bins) / (double(b) - a) : 0.0;
      double* h = cal.hist + slot * cal.bins;
      for (int64_t c = 0; c < cols; ++c) {
        const double t = (double(xr[c]) - a) * w;
        // NaN lands in bin 0 (both comparisons false)
        h[t > 0 ? (t < double(cal.bins - 1) ? int64_t(t) : cal.bins - 1) : 0] += 1.0;
      }
    }
  }
  return Error{};
}

// y[t * ld + j] += b[j] for t < n, j < len: a bias on rows `ld` floats apart
void add_bias(float* y, int64_t n, int64_t ld, const float* b, int64_t len) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < len; ++j) y[t * ld + j] += b[j];
}

// Embedding row r: read from the file (pread) where it lies in a registered
// mapping and is kept in GGUF blocks as stored or in f32, else through memory.
Error embed_row(const LinearWeight& e, int64_t r, std::vector<uint8_t>& tmp, float* out) {
  if (e.format == &kLinearGgml && !e.as<BlockWeight>().x16) {
    const BlockWeight& b = e.as<BlockWeight>();
    try {
      if (int64_t(tmp.size()) < b.row_bytes) tmp.resize(size_t(b.row_bytes));
    } catch (const std::bad_alloc&) {
      return Error::make(Status::out_of_memory, "embedding: out of memory");
    }
    if (read_file_bytes(b.data + r * b.row_bytes, size_t(b.row_bytes), tmp.data())) {
      b.fmt->to_f32(tmp.data(), b.k / b.fmt->block, out);
      return Error{};
    }
  } else if (e.format == &kLinearF32) {
    const float* rows = static_cast<const float*>(e.format->memory(e.data.get()));
    if (rows && read_file_bytes(rows + r * e.k, size_t(e.k) * sizeof(float), out)) return Error{};
  }
  return e.format->row_f32(e, r, out);
}

class CpuBackend final : public LlamaBackend {
 public:
  CpuBackend(const LlamaConfig& c, const LlamaWeights& w) : c_(c), w_(w) {
    for (const LlamaLayer& L : w.layers) (L.w13.present() ? ffn_fused_ : ffn_apart_) = true;
  }
  ~CpuBackend() override {
    for (auto* v : {&k_, &v_})
      for (void* p : *v) aligned_free(p);
    for (auto* v : {&ks_, &vs_})
      for (float* p : *v) aligned_free(p);
  }

  // every slot's rows: pages are committed as positions are first written
  Error alloc_cache(size_t* cache_bytes) {
    const LlamaConfig& c = c_;
    const size_t es = size_t(kv_elem_size(c.kv_type));
    const size_t rows = size_t(c.max_sequences * c.kv_heads * c.max_seq), bytes = rows * size_t(c.head_dim) * es;
    size_t total = 0;
    for (int64_t l = 0; l < c.layers; ++l) {
      k_.push_back(aligned_malloc(bytes));
      v_.push_back(aligned_malloc(bytes));
      if (!k_.back() || !v_.back()) return Error::make(Status::out_of_memory, "model: cannot allocate the KV cache");
      if (c.kv_type == KvType::i8) {
        ks_.push_back(static_cast<float*>(aligned_malloc(rows * 4)));
        vs_.push_back(static_cast<float*>(aligned_malloc(rows * 4)));
        if (!ks_.back() || !vs_.back()) return Error::make(Status::out_of_memory, "model: cannot allocate the KV cache");
      } else {
        ks_.push_back(nullptr);
        vs_.push_back(nullptr);
      }
      total += 2 * (bytes + (c.kv_type == KvType::i8 ? rows * 4 : 0));
    }
    *cache_bytes = total;
    return Error{};
  }

  Error begin(const int32_t*, const LlamaBatch& b, bool, float* logits, LlamaActs* a) override {
    const LlamaConfig& c = c_;
    b_ = &b;
    const int64_t n = b.n, hd = c.head_dim, kvd = c.kv_heads * hd, dim = c.dim, qd = c.heads * hd, qkvd = qd + 2 * kvd;
    auto grow = [](std::vector<float>& v, int64_t size) -> std::vector<float>& {
      if (int64_t(v.size()) < size) v.resize(size_t(size));
      return v;
    };
    try {
      a->x = grow(x_, n * dim).data();
      a->xb = grow(xb_, n * dim).data();
      // One work area for what lives only within a layer's attention (q | k | v, the
      // heads, the attention output) or only within its FFN (silu(gate) * up, and the
      // gate | up outputs: fused [n, 2 * hidden] or apart [n, hidden] twice): the two
      // halves share memory (at 512 tokens of a 1B model, 16 MiB). Then tmp, the
      // output of wo / w2, written while their inputs are alive.
      const int64_t hn = n * c.hidden;
      const int64_t attn_f = n * (qkvd + 2 * qd + 2 * kvd), ffn_f = hn * (ffn_fused_ ? 3 : 2);
      float* const work = grow(work_, std::max(attn_f, ffn_f) + n * dim).data();
      a->qkv = work;
      a->qt = a->qkv + n * qkvd;
      a->att = a->qt + n * qd;
      a->kt = a->att + n * qd;
      a->vt = a->kt + n * kvd;
      a->h1 = work;
      a->h3 = work + hn;   // apart
      a->h13 = work + hn;  // fused
      a->tmp = work + std::max(attn_f, ffn_f);
      a->logits = logits;
      // RoPE's tables at each row's position, shared by q and k of every layer
      const int64_t half = hd / 2;
      rcs_ = grow(rope_cs_, n * half).data();
      rsn_ = grow(rope_sn_, n * half).data();
    } catch (const std::bad_alloc&) {
      return Error::make(Status::out_of_memory, "model: out of memory for the activations");
    }
    const int64_t half = hd / 2;
    for (int64_t i = 0; i < b.count; ++i)
      SPARQ_TRY(rope_table(b.len[size_t(i)], hd, b.pos[size_t(i)], c.rope_theta, w_.rope_freqs, rcs_ + b.row0[size_t(i)] * half,
                           rsn_ + b.row0[size_t(i)] * half));
    tk_max_ = *std::max_element(b.k_len.begin(), b.k_len.end());
    return Error{};
  }

  Error embed(const int32_t* tok, int64_t n, float* x) override {
    for (int64_t t = 0; t < n; ++t) SPARQ_TRY(embed_row(w_.embed, int64_t(tok[t]), embed_tmp_, x + t * c_.dim));
    return Error{};
  }

  Error rmsnorm(int64_t layer, LlamaNorm which, const float* x, int64_t rows, int64_t d, float* y) override {
    return sparq::rmsnorm(x, norm(layer, which), rows, d, c_.norm_eps, y);
  }

  Error linear(int64_t layer, LlamaLinear which, const float* x, int64_t m, float* y) override {
    if (which == LlamaLinear::output) return sparq::linear(x, m, w_.output, y);
    const LlamaLayer& L = w_.layers[size_t(layer)];
    const int64_t qd = c_.heads * c_.head_dim, kvd = c_.kv_heads * c_.head_dim;
    switch (which) {
      case LlamaLinear::qkv:
        SPARQ_TRY(sparq::linear(x, m, L.wqkv, y));
        if (L.bq) {
          add_bias(y, m, qd + 2 * kvd, L.bq, qd);
          add_bias(y + qd, m, qd + 2 * kvd, L.bk, kvd);
          add_bias(y + qd + kvd, m, qd + 2 * kvd, L.bv, kvd);
        }
        return Error{};
      case LlamaLinear::q:
        SPARQ_TRY(sparq::linear(x, m, L.wq, y));
        if (L.bq) add_bias(y, m, qd, L.bq, qd);
        return Error{};
      case LlamaLinear::k:
        SPARQ_TRY(sparq::linear(x, m, L.wk, y));
        if (L.bk) add_bias(y, m, kvd, L.bk, kvd);
        return Error{};
      case LlamaLinear::v:
        SPARQ_TRY(sparq::linear(x, m, L.wv, y));
        if (L.bv) add_bias(y, m, kvd, L.bv, kvd);
        return Error{};
      case LlamaLinear::o: return sparq::linear(x, m, L.wo, y);
      case LlamaLinear::w13: return sparq::linear(x, m, L.w13, y);
      case LlamaLinear::w1: return sparq::linear(x, m, L.w1, y);
      case LlamaLinear::w3: return sparq::linear(x, m, L.w3, y);
      case LlamaLinear::w2: return sparq::linear(x, m, L.w2, y);
      default: return Error::make(Status::internal, "model: unknown linear");
    }
  }

  Error to_heads(const float* x, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y) override {
    sparq::to_heads(x, ld, n, h, hd, y);
    return Error{};
  }
  Error from_heads(const float* x, int64_t n, int64_t h, int64_t hd, float* y) override {
    sparq::from_heads(x, n, h, hd, y);
    return Error{};
  }

  Error rope(float* x, int64_t heads, int64_t len, int64_t hd, int64_t seq) override {
    const int64_t r = b_->row0[size_t(seq)] * (hd / 2);
    rope_apply(x, heads, len, hd, c_.rope_neox, rcs_ + r, rsn_ + r, x);
    return Error{};
  }

  Error kv_store(int64_t layer, const float* k, const float* v, int64_t seq) override {
    const LlamaConfig& c = c_;
    const size_t l = size_t(layer), i = size_t(seq);
    const int64_t so = b_->slot[i] * c.kv_heads * c.max_seq, es = kv_elem_size(c.kv_type), hd = c.head_dim;
    SPARQ_TRY(sparq::kv_store(k, 1, c.kv_heads, b_->len[i], hd, c.kv_type, static_cast<char*>(k_[l]) + so * hd * es,
                              ks_[l] ? ks_[l] + so : nullptr, c.max_seq, b_->pos[i]));
    return sparq::kv_store(v, 1, c.kv_heads, b_->len[i], hd, c.kv_type, static_cast<char*>(v_[l]) + so * hd * es,
                           vs_[l] ? vs_[l] + so : nullptr, c.max_seq, b_->pos[i]);
  }

  Error attention(int64_t layer, const float* q, float* out) override {
    const LlamaConfig& c = c_;
    const size_t l = size_t(layer);
    AttentionArgs a;
    a.q = q;
    a.b = b_->count;
    a.q_len = b_->len.data();
    a.k_len = b_->k_len.data();
    a.kv_index = b_->slot.data();
    a.kv_entries = c.max_sequences;
    a.hq = c.heads;
    a.tq = b_->n;
    a.d = c.head_dim;
    a.kv.type = c.kv_type;
    a.kv.k = k_[l];
    a.kv.v = v_[l];
    a.kv.k_scale = ks_[l];
    a.kv.v_scale = vs_[l];
    a.kv.cap = c.max_seq;
    a.hkv = c.kv_heads;
    a.tk = tk_max_;
    a.scale = float(1.0 / std::sqrt(double(c.head_dim)));
    a.causal = true;
    a.out = out;
    return sparq::attention(a);
  }

  Error add(const float* a, const float* b, int64_t n, float* y) override { return sparq::add(a, b, n, y); }
  Error swiglu(const float* a, const float* b, int64_t n, float* y) override { return sparq::swiglu(a, b, n, y); }
  Error swiglu_rows(const float* h13, int64_t n, int64_t hidden, float* y) override { return sparq::swiglu_rows(h13, n, hidden, y); }
  Error observe(const LlamaCalibration& cal, const float* x, int64_t rows, int64_t cols, int64_t layer, int input, int64_t feat,
                double* gram) override {
    return sparq::observe(cal, x, rows, cols, layer, input, feat, gram);
  }
  Error finish(const LlamaActs&, int64_t, float*) override { return Error{}; }  // written in place

 private:
  const float* norm(int64_t layer, LlamaNorm which) const {
    if (which == LlamaNorm::final) return w_.final_norm;
    const LlamaLayer& L = w_.layers[size_t(layer)];
    return which == LlamaNorm::attn ? L.attn_norm : which == LlamaNorm::ffn ? L.ffn_norm : which == LlamaNorm::q ? L.q_norm : L.k_norm;
  }

  const LlamaConfig c_;
  const LlamaWeights& w_;
  bool ffn_fused_ = false, ffn_apart_ = false;  // some layer has gate|up fused / apart
  std::vector<void*> k_, v_;     // per layer [max_sequences, kv_heads, max_seq, hd]
  std::vector<float*> ks_, vs_;  // int8 scales [max_sequences, kv_heads, max_seq]
  std::vector<float> x_, xb_, work_;      // the residual, a normed copy, the work area
  std::vector<float> rope_cs_, rope_sn_;  // RoPE's cos / sin at each row's position
  float *rcs_ = nullptr, *rsn_ = nullptr;
  std::vector<uint8_t> embed_tmp_;        // an embedding row's blocks as read from the file
  const LlamaBatch* b_ = nullptr;         // the batch begun
  int64_t tk_max_ = 0;
};

}  // namespace

Error make_cpu_backend(const LlamaConfig& c, const LlamaWeights& w, std::unique_ptr<LlamaBackend>* out, size_t* cache_bytes) {
  std::unique_ptr<CpuBackend> be(new (std::nothrow) CpuBackend(c, w));
  if (!be) return Error::make(Status::out_of_memory, "model: out of memory");
  SPARQ_TRY(be->alloc_cache(cache_bytes));
  *out = std::move(be);
  return Error{};
}

}  // namespace sparq
