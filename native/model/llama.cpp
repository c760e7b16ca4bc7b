// llama.cpp - the Llama forward pass on the kernel library: per layer
// RMSNorm -> q/k/v linears -> RoPE -> KV store -> fused attention over the
// cache -> output linear + residual -> RMSNorm -> SwiGLU FFN + residual.
// Activations are token-major [n, features]; attention wants head-major
// [heads, n, hd], so q/k/v are transposed on the way in and out (O(n * dim)).
#include "llama.h"

#include "llama_cuda.h"
#include "../cpu/quants.h"
#include "../cpu/thread_pool.h"
#include "sparq/profile.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace sparq {

namespace {

Error bad(const std::string& m) { return Error::make(Status::invalid_argument, "model: " + m); }

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

// A linear kept in Q4_0 / Q4_K blocks (and Q5_K / Q6_K / Q8_0 where the GEMV reads
// them so: block_x16_preferred) is repacked (x16, quants.h) for the GEMV,
// and the file pages it was read from are given back (the copy replaces them:
// peak RSS stays file + one tensor). SPARQ_REPACK=0 keeps the stored layout.
Error repack(LinearWeight& w) {
  static const bool off = [] {
    const char* e = std::getenv("SPARQ_REPACK");
    return e && std::strcmp(e, "0") == 0;
  }();
  if (off || w.format != &kLinearGgml || !block_x16_preferred(w.as<BlockWeight>())) return Error{};
  const BlockWeight& b = w.as<BlockWeight>();
  const void* src = b.data;
  const size_t bytes = b.bytes();
  std::shared_ptr<const BlockWeight> r;
  SPARQ_TRY(block_repack_x16(b, &r));
  w = ggml_linear(std::move(r));
  release_file_pages(src, bytes);
  return Error{};
}

// An embedding used a row per token gives back the file pages the loader
// mapped in for it (MADV_POPULATE_READ maps the whole file): a row looked up
// later is read again from the page cache, and only the rows used stay
// resident (1B Q4_K_M: 36 MiB of Q4_K rows; 512 distinct tokens touch ~2 MiB).
// A tied one is the classifier too, read whole every token, and stays.
// Rows are then read with pread (embed_row): through the mapping, each lookup
// would map a whole large folio of the page cache back (20 of the 36 MiB after
// 544 lookups).
void release_embedding(const LinearWeight& e) {
  size_t bytes = 0;
  if (e.format == &kLinearGgml) bytes = size_t(e.as<BlockWeight>().n * e.as<BlockWeight>().row_bytes);
  else if (e.format == &kLinearF32) bytes = size_t(e.n * e.k) * sizeof(float);
  const void* p = bytes ? e.format->memory(e.data.get()) : nullptr;
  if (p) release_file_pages(p, bytes);  // nothing unless it lies in a registered file mapping
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

}  // namespace

LlamaModel::~LlamaModel() {
  for (void* p : k_) aligned_free(p);
  for (void* p : v_) aligned_free(p);
  for (float* p : ks_) aligned_free(p);
  for (float* p : vs_) aligned_free(p);
}

Error LlamaModel::create(const LlamaConfig& cfg, LlamaWeights w, std::unique_ptr<LlamaModel>* out) {
  LlamaConfig c = cfg;
  if (c.dim < 1 || c.hidden < 1 || c.layers < 1 || c.heads < 1 || c.kv_heads < 1 || c.vocab < 1 || c.max_seq < 1)
    return bad("every dimension must be at least 1");
  if (c.head_dim < 0) return bad("head dim must be >= 0");
  if (!c.head_dim && c.dim % c.heads) return bad("dim (" + std::to_string(c.dim) + ") must be a multiple of heads (" + std::to_string(c.heads) + ")");
  if (!c.head_dim) c.head_dim = c.dim / c.heads;
  if (c.heads % c.kv_heads) return bad("heads must be a multiple of kv heads");
  if (c.max_sequences < 1 || c.max_sequences > 4096) return bad("max sequences must be in [1, 4096]");
  if (!(c.rope_theta > 0.f) || !(c.norm_eps >= 0.f)) return bad("rope theta must be > 0 and norm eps >= 0");
  if (int64_t(w.layers.size()) != c.layers) return bad("layer count mismatch");
  if (!w.embed.present() || !w.final_norm) return bad("embedding and final norm are required");
  if (!w.embed.format->row_f32) return bad(std::string("the embedding cannot be ") + w.embed.format->name + " (f32 or GGUF blocks)");
  SPARQ_TRY(check_linear(w.embed, c.vocab, c.dim, "embed"));
  const int64_t hd = c.head_dim, kvd = c.kv_heads * hd, qd = c.heads * hd;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LlamaLayer& l = w.layers[i];
    if (!l.attn_norm || !l.ffn_norm) return bad("layer " + std::to_string(i) + ": norms are required");
    if (bool(l.bq) != bool(l.bk) || bool(l.bq) != bool(l.bv)) return bad("layer " + std::to_string(i) + ": q / k / v biases come all three or none");
    if (bool(l.q_norm) != bool(l.k_norm)) return bad("layer " + std::to_string(i) + ": q and k norms come both or none");
    if (l.wqkv.present()) {
      SPARQ_TRY(check_linear(l.wqkv, qd + 2 * kvd, c.dim, "wqkv"));
    } else {
      SPARQ_TRY(check_linear(l.wq, qd, c.dim, "wq"));
      SPARQ_TRY(check_linear(l.wk, kvd, c.dim, "wk"));
      SPARQ_TRY(check_linear(l.wv, kvd, c.dim, "wv"));
    }
    SPARQ_TRY(check_linear(l.wo, c.dim, qd, "wo"));
    if (l.w13.present()) {
      SPARQ_TRY(check_linear(l.w13, 2 * c.hidden, c.dim, "w13"));
    } else {
      SPARQ_TRY(check_linear(l.w1, c.hidden, c.dim, "w1"));
      SPARQ_TRY(check_linear(l.w3, c.hidden, c.dim, "w3"));
    }
    SPARQ_TRY(check_linear(l.w2, c.dim, c.hidden, "w2"));
  }
  SPARQ_TRY(check_linear(w.output, c.vocab, c.dim, "output"));
  if (w.rope_freqs)
    for (int64_t i = 0; i < hd / 2; ++i)
      if (!(w.rope_freqs[i] > 0.f) || !std::isfinite(w.rope_freqs[i])) return bad("rope frequency factors must be finite and > 0");
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->cfg_ = c;
  m->w_ = std::move(w);
  for (LlamaLayer& L : m->w_.layers)
    for (LinearWeight* lw : {&L.wqkv, &L.wq, &L.wk, &L.wv, &L.wo, &L.w13, &L.w1, &L.w3, &L.w2}) SPARQ_TRY(repack(*lw));
  if (!m->w_.output.same(m->w_.embed)) {
    SPARQ_TRY(repack(m->w_.output));  // a tied one is also the embedding: left as stored
    release_embedding(m->w_.embed);
  }
  for (const LlamaLayer& L : m->w_.layers) (L.w13.present() ? m->ffn_fused_ : m->ffn_apart_) = true;
  const size_t es = size_t(kv_elem_size(c.kv_type));
  m->pos_.reset(new std::atomic<int64_t>[size_t(c.max_sequences)]);
  for (int64_t i = 0; i < c.max_sequences; ++i) m->pos_[size_t(i)].store(0, std::memory_order_relaxed);
  // every slot's rows: pages are committed as positions are first written
  const size_t rows = size_t(c.max_sequences * c.kv_heads * c.max_seq), bytes = rows * size_t(hd) * es;
  for (int64_t l = 0; l < c.layers; ++l) {
    m->k_.push_back(aligned_malloc(bytes));
    m->v_.push_back(aligned_malloc(bytes));
    if (!m->k_.back() || !m->v_.back()) return Error::make(Status::out_of_memory, "model: cannot allocate the KV cache");
    if (c.kv_type == KvType::i8) {
      m->ks_.push_back(static_cast<float*>(aligned_malloc(rows * 4)));
      m->vs_.push_back(static_cast<float*>(aligned_malloc(rows * 4)));
      if (!m->ks_.back() || !m->vs_.back()) return Error::make(Status::out_of_memory, "model: cannot allocate the KV cache");
    } else {
      m->ks_.push_back(nullptr);
      m->vs_.push_back(nullptr);
    }
    m->cache_bytes_ += 2 * (bytes + (c.kv_type == KvType::i8 ? rows * 4 : 0));
  }
  *out = std::move(m);
  return Error{};
}

Error LlamaModel::to_cuda(cuda::Context* ctx) {
  if (gpu_) return Error{};
  if (cfg_.max_sequences > 1)
    return Error::make(Status::unsupported, "model: batched decode (max sequences > 1) runs on the CPU; load with one sequence for CUDA");
  std::unique_ptr<CudaLlama> g;
  SPARQ_TRY(CudaLlama::create(ctx, cfg_, w_, &g));
  gpu_ = std::move(g);
  device_bytes_.store(gpu_->device_bytes(), std::memory_order_release);
  pos_[0].store(0, std::memory_order_release);
  return Error{};
}

Error LlamaModel::forward(const int32_t* tok, int64_t n, bool all, float* logits) {
  if (n < 1) return bad("no tokens");
  const int32_t slot = 0;
  return run(tok, &n, &slot, 1, all, logits);
}

Error LlamaModel::forward_batch(const int32_t* tok, const int64_t* lengths, const int32_t* slots, int64_t count, float* logits) {
  if (!tok || !lengths || !slots || !logits) return bad("forward_batch: tokens, lengths, slots and logits are required");
  return run(tok, lengths, slots, count, false, logits);
}

Error LlamaModel::run(const int32_t* tok, const int64_t* len, const int32_t* slot, int64_t count, bool all, float* logits) {
  const LlamaConfig& c = cfg_;
  if (count < 1 || count > c.max_sequences)
    return bad("a batch holds 1 to " + std::to_string(c.max_sequences) + " sequences; got " + std::to_string(count));
  // each sequence's slot, position and first row among the n tokens; attention's
  // ragged batch: its queries, keys and cache slot (kept across calls: no allocation per token)
  BatchRows& b = batch_;
  for (auto* v : {&b.pos, &b.row0, &b.q_len, &b.k_len, &b.kv_slot}) v->resize(size_t(count));
  b.used.assign(size_t(c.max_sequences), 0);
  std::vector<int64_t>&pos = b.pos, &row0 = b.row0;
  int64_t n = 0;
  for (int64_t i = 0; i < count; ++i) {
    const auto which = [&] { return count > 1 ? "sequence " + std::to_string(i) + ": " : std::string(); };
    if (len[i] < 1) return bad(which() + "no tokens");
    if (slot[i] < 0 || slot[i] >= c.max_sequences)
      return bad(which() + "slot " + std::to_string(slot[i]) + " is outside [0, " + std::to_string(c.max_sequences) + ")");
    if (b.used[size_t(slot[i])]++) return bad(which() + "slot " + std::to_string(slot[i]) + " appears twice in one batch");
    pos[size_t(i)] = pos_[size_t(slot[i])].load(std::memory_order_relaxed);
    if (pos[size_t(i)] + len[i] > c.max_seq)
      return bad(which() + "context is full: " + std::to_string(pos[size_t(i)]) + " positions + " + std::to_string(len[i]) +
                 " new exceed maxSeq " + std::to_string(c.max_seq));
    row0[size_t(i)] = n;
    n += len[i];
    b.q_len[size_t(i)] = len[i];
    b.k_len[size_t(i)] = pos[size_t(i)] + len[i];
    b.kv_slot[size_t(i)] = slot[i];
  }
  for (int64_t i = 0; i < n; ++i)
    if (tok[i] < 0 || tok[i] >= c.vocab)
      return bad("token id " + std::to_string(tok[i]) + " at index " + std::to_string(i) + " is outside [0, " +
                 std::to_string(c.vocab) + ")");
  prof::Scope whole(prof::kForward);
  if (gpu_) {
    if (calib_) return bad("calibration runs on the CPU; calibrate before moving the model to the GPU");
    if (count != 1 || slot[0] != 0) return Error::make(Status::unsupported, "model: batched decode runs on the CPU");
    SPARQ_TRY(gpu_->forward(tok, n, pos[0], all, logits));
    device_bytes_.store(gpu_->device_bytes(), std::memory_order_release);  // activations grow with the chunk
    pos_[0].store(pos[0] + n, std::memory_order_release);
    return Error{};
  }
  const int64_t hd = c.head_dim, kvd = c.kv_heads * hd, dim = c.dim, qd = c.heads * hd;
  const int64_t qkvd = qd + 2 * kvd;
  auto grow = [](std::vector<float>& v, int64_t size) -> std::vector<float>& {
    if (int64_t(v.size()) < size) v.resize(size_t(size));
    return v;
  };
  std::vector<float>& x = grow(x_, n * dim);
  std::vector<float>& xb = grow(xb_, n * dim);
  // One work area for what lives only within a layer's attention (q | k | v, the
  // heads, the attention output) or only within its FFN (silu(gate) * up, and the
  // gate | up outputs: fused [n, 2 * hidden] or apart [n, hidden] twice): the two
  // halves share memory (at 512 tokens of a 1B model, 16 MiB). Then tmp, the
  // output of wo / w2, written while their inputs are alive.
  const int64_t hn = n * c.hidden;
  const int64_t attn_f = n * (qkvd + 2 * qd + 2 * kvd), ffn_f = hn * (ffn_fused_ ? 3 : 2);
  float* const work = grow(work_, std::max(attn_f, ffn_f) + n * dim).data();
  float* const qkv = work;
  float* const qt = qkv + n * qkvd;
  float* const att = qt + n * qd;
  float* const kt = att + n * qd;
  float* const vt = kt + n * kvd;
  float* const h1 = work;
  float* const h3 = work + hn;   // apart
  float* const h13 = work + hn;  // fused
  float* const tmp = work + std::max(attn_f, ffn_f);
  prof::Scope st(prof::kRope);  // the stage running now
  // RoPE's tables at each row's position, shared by q and k of every layer
  const int64_t half = hd / 2;
  float* const rcs = grow(rope_cs_, n * half).data();
  float* const rsn = grow(rope_sn_, n * half).data();
  for (int64_t i = 0; i < count; ++i)
    SPARQ_TRY(rope_table(len[i], hd, pos[size_t(i)], c.rope_theta, w_.rope_freqs, rcs + row0[size_t(i)] * half, rsn + row0[size_t(i)] * half));
  const int64_t tk_max = *std::max_element(b.k_len.begin(), b.k_len.end());
  const int64_t slot_rows = c.kv_heads * c.max_seq, es = kv_elem_size(c.kv_type);
  st.next(prof::kEmbed);
  for (int64_t t = 0; t < n; ++t) SPARQ_TRY(embed_row(w_.embed, int64_t(tok[t]), embed_tmp_, x.data() + t * dim));
  for (int64_t li = 0; li < c.layers; ++li) {
    const LlamaLayer& L = w_.layers[size_t(li)];
    st.next(prof::kNorm);
    SPARQ_TRY(rmsnorm(x.data(), L.attn_norm, n, dim, c.norm_eps, xb.data()));
    const int64_t feat = li * calibration_stride();
    // X^T X offsets of this layer's four inputs when it is the one being recorded
    double* gram = calib_ && calib_->gram && calib_->gram_layer == li ? calib_->gram : nullptr;
    if (calib_) SPARQ_TRY(observe(*calib_, xb.data(), n, dim, li, 0, feat, gram));
    // q | k | v per token row: one fused linear, or three into the same layout
    float* qp = qkv;
    int64_t ld = qkvd;
    st.next(prof::kQkv);
    if (L.wqkv.present()) {
      SPARQ_TRY(linear(xb.data(), n, L.wqkv, qp));
    } else {
      ld = qd;  // three separate [n, *] blocks
      SPARQ_TRY(linear(xb.data(), n, L.wq, qp));
      SPARQ_TRY(linear(xb.data(), n, L.wk, qp + n * qd));
      SPARQ_TRY(linear(xb.data(), n, L.wv, qp + n * (qd + kvd)));
    }
    const bool fused = ld == qkvd;
    float* const kp = fused ? qp + qd : qp + n * qd;
    float* const vp = fused ? qp + qd + kvd : qp + n * (qd + kvd);
    const int64_t kld = fused ? ld : kvd;
    if (L.bq) {
      add_bias(qp, n, ld, L.bq, qd);
      add_bias(kp, n, kld, L.bk, kvd);
      add_bias(vp, n, kld, L.bv, kvd);
    }
    // per sequence [heads, its rows, hd], one sequence after another
    st.next(prof::kHeads);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = row0[size_t(i)];
      to_heads(qp + r * ld, ld, len[i], c.heads, hd, qt + r * qd);
      to_heads(kp + r * kld, kld, len[i], c.kv_heads, hd, kt + r * kvd);
      to_heads(vp + r * kld, kld, len[i], c.kv_heads, hd, vt + r * kvd);
    }
    if (L.q_norm) {  // each head's q and k normalized over its hd features
      st.next(prof::kNorm);
      SPARQ_TRY(rmsnorm(qt, L.q_norm, c.heads * n, hd, c.norm_eps, qt));
      SPARQ_TRY(rmsnorm(kt, L.k_norm, c.kv_heads * n, hd, c.norm_eps, kt));
    }
    st.next(prof::kRope);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = row0[size_t(i)];
      rope_apply(qt + r * qd, c.heads, len[i], hd, c.rope_neox, rcs + r * half, rsn + r * half, qt + r * qd);
      rope_apply(kt + r * kvd, c.kv_heads, len[i], hd, c.rope_neox, rcs + r * half, rsn + r * half, kt + r * kvd);
    }
    const size_t l = size_t(li);
    st.next(prof::kKvStore);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = row0[size_t(i)], so = slot[i] * slot_rows;
      SPARQ_TRY(kv_store(kt + r * kvd, 1, c.kv_heads, len[i], hd, c.kv_type, static_cast<char*>(k_[l]) + so * hd * es,
                         ks_[l] ? ks_[l] + so : nullptr, c.max_seq, pos[size_t(i)]));
      SPARQ_TRY(kv_store(vt + r * kvd, 1, c.kv_heads, len[i], hd, c.kv_type, static_cast<char*>(v_[l]) + so * hd * es,
                         vs_[l] ? vs_[l] + so : nullptr, c.max_seq, pos[size_t(i)]));
    }
    AttentionArgs a;
    a.q = qt;
    a.b = count;
    a.q_len = b.q_len.data();
    a.k_len = b.k_len.data();
    a.kv_index = b.kv_slot.data();
    a.kv_entries = c.max_sequences;
    a.hq = c.heads;
    a.tq = n;
    a.d = hd;
    a.kv.type = c.kv_type;
    a.kv.k = k_[l];
    a.kv.v = v_[l];
    a.kv.k_scale = ks_[l];
    a.kv.v_scale = vs_[l];
    a.kv.cap = c.max_seq;
    a.hkv = c.kv_heads;
    a.tk = tk_max;
    a.scale = float(1.0 / std::sqrt(double(hd)));
    a.causal = true;
    a.out = att;
    st.next(prof::kAttention);
    SPARQ_TRY(attention(a));
    st.next(prof::kHeads);
    for (int64_t i = 0; i < count; ++i) from_heads(att + row0[size_t(i)] * qd, len[i], c.heads, hd, qt + row0[size_t(i)] * qd);
    if (calib_) SPARQ_TRY(observe(*calib_, qt, n, qd, li, 1, feat + dim, gram ? gram + dim * dim : nullptr));
    st.next(prof::kWo);
    SPARQ_TRY(linear(qt, n, L.wo, tmp));
    st.next(prof::kResidual);
    SPARQ_TRY(add(x.data(), tmp, n * dim, x.data()));
    st.next(prof::kNorm);
    SPARQ_TRY(rmsnorm(x.data(), L.ffn_norm, n, dim, c.norm_eps, xb.data()));
    if (calib_) SPARQ_TRY(observe(*calib_, xb.data(), n, dim, li, 2, feat + dim + qd, gram ? gram + dim * dim + qd * qd : nullptr));
    st.next(prof::kFfnUp);
    if (L.w13.present()) {
      // [n, gate | up]: one token's halves are contiguous; more tokens are split out
      SPARQ_TRY(linear(xb.data(), n, L.w13, h13));
      st.next(prof::kSwiglu);
      SPARQ_TRY(swiglu_rows(h13, n, c.hidden, h1));
    } else {
      SPARQ_TRY(linear(xb.data(), n, L.w1, h1));
      SPARQ_TRY(linear(xb.data(), n, L.w3, h3));
      st.next(prof::kSwiglu);
      SPARQ_TRY(swiglu(h1, h3, n * c.hidden, h1));
    }
    if (calib_) SPARQ_TRY(observe(*calib_, h1, n, c.hidden, li, 3, feat + 2 * dim + qd, gram ? gram + 2 * dim * dim + qd * qd : nullptr));
    st.next(prof::kFfnDown);
    SPARQ_TRY(linear(h1, n, L.w2, tmp));
    st.next(prof::kResidual);
    SPARQ_TRY(add(x.data(), tmp, n * dim, x.data()));
  }
  st.next(prof::kClassifier);
  if (all) {
    SPARQ_TRY(rmsnorm(x.data(), w_.final_norm, n, dim, c.norm_eps, xb.data()));
  } else {  // each sequence's last row
    for (int64_t i = 0; i < count; ++i)
      SPARQ_TRY(rmsnorm(x.data() + (row0[size_t(i)] + len[i] - 1) * dim, w_.final_norm, 1, dim, c.norm_eps, xb.data() + i * dim));
  }
  SPARQ_TRY(linear(xb.data(), all ? n : count, w_.output, logits));
  for (int64_t i = 0; i < count; ++i) pos_[size_t(slot[i])].store(pos[size_t(i)] + len[i], std::memory_order_release);
  return Error{};
}

}  // namespace sparq
