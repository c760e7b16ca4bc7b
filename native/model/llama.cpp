// llama.cpp - the Llama forward pass on the kernel library: per layer
// RMSNorm -> q/k/v linears -> RoPE -> KV store -> fused attention over the
// cache -> output linear + residual -> RMSNorm -> SwiGLU FFN + residual.
// Activations are token-major [n, features]; attention wants head-major
// [heads, n, hd], so q/k/v are transposed on the way in and out (O(n * dim)).
#include "llama.h"

#include "backend.h"
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

}  // namespace

LlamaModel::~LlamaModel() = default;

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
  m->batch_.reset(new LlamaBatch());
  for (LlamaLayer& L : m->w_.layers)
    for (LinearWeight* lw : {&L.wqkv, &L.wq, &L.wk, &L.wv, &L.wo, &L.w13, &L.w1, &L.w3, &L.w2}) SPARQ_TRY(repack(*lw));
  if (!m->w_.output.same(m->w_.embed)) {
    SPARQ_TRY(repack(m->w_.output));  // a tied one is also the embedding: left as stored
    release_embedding(m->w_.embed);
  }
  m->pos_.reset(new std::atomic<int64_t>[size_t(c.max_sequences)]);
  for (int64_t i = 0; i < c.max_sequences; ++i) m->pos_[size_t(i)].store(0, std::memory_order_relaxed);
  SPARQ_TRY(make_cpu_backend(m->cfg_, m->w_, &m->cpu_, &m->cache_bytes_));
  *out = std::move(m);
  return Error{};
}

Error LlamaModel::to_cuda(cuda::Context* ctx) {
  if (gpu_) return Error{};
  if (cfg_.max_sequences > 1)
    return Error::make(Status::unsupported, "model: batched decode (max sequences > 1) runs on the CPU; load with one sequence for CUDA");
  std::unique_ptr<LlamaBackend> g;
  SPARQ_TRY(make_cuda_backend(ctx, cfg_, w_, &g));
  gpu_ = std::move(g);
  device_bytes_.store(gpu_->device_bytes(), std::memory_order_release);
  pos_[0].store(0, std::memory_order_release);
  return Error{};
}

Error LlamaModel::calibrate(const int32_t* tokens, const int32_t* lengths, int64_t count, const float* ranges, int64_t bins,
                            int64_t gram_layer, LlamaCalibrationResult* out) {
  const LlamaConfig& c = cfg_;
  // the model never keeps a pointer to the calibration arrays, and slot 0 is
  // empty afterwards, whatever happens
  struct Detach {
    LlamaModel& m;
    ~Detach() {
      m.calib_ = nullptr;
      m.truncate(0);
    }
  } detach{*this};
  if (gpu_) return bad("calibration runs on the CPU; calibrate before moving the model to the GPU");
  if (gram_layer >= c.layers) return bad("calibration: gram layer " + std::to_string(gram_layer) + " is outside the model");
  LlamaCalibration cal;
  std::vector<float> logits;
  try {
    out->sumsq.assign(size_t(calibration_size()), 0.0);
    out->amax.assign(size_t(calibration_size()), 0.f);
    out->lo.assign(size_t(c.layers * 4), INFINITY);
    out->hi.assign(size_t(c.layers * 4), -INFINITY);
    out->hist.assign(ranges && bins > 0 ? size_t(c.layers * 4 * bins) : 0, 0.0);
    const int64_t qd = c.heads * c.head_dim;
    out->gram.assign(gram_layer >= 0 ? size_t(2 * c.dim * c.dim + qd * qd + c.hidden * c.hidden) : 0, 0.0);
    logits.resize(size_t(c.vocab));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "calibration: out of memory");
  }
  cal.sumsq = out->sumsq.data();
  cal.amax = out->amax.data();
  cal.lo = out->lo.data();
  cal.hi = out->hi.data();
  if (!out->hist.empty()) {
    cal.hist = out->hist.data();
    cal.bins = bins;
    cal.range = ranges;
  }
  if (gram_layer >= 0) {
    cal.gram = out->gram.data();
    cal.gram_layer = gram_layer;
  }
  calib_ = &cal;
  int64_t at = 0;
  for (int64_t i = 0; i < count; ++i) {
    truncate(0);
    SPARQ_TRY(forward(tokens + at, lengths[i], false, logits.data()));
    at += lengths[i];
  }
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
  // each sequence's slot, position and first row among the n tokens (kept across
  // calls: no allocation per token)
  LlamaBatch& b = *batch_;
  for (auto* v : {&b.pos, &b.row0, &b.len, &b.k_len, &b.slot}) v->resize(size_t(count));
  b.used.assign(size_t(c.max_sequences), 0);
  b.count = count;
  int64_t n = 0;
  for (int64_t i = 0; i < count; ++i) {
    const auto which = [&] { return count > 1 ? "sequence " + std::to_string(i) + ": " : std::string(); };
    if (len[i] < 1) return bad(which() + "no tokens");
    if (slot[i] < 0 || slot[i] >= c.max_sequences)
      return bad(which() + "slot " + std::to_string(slot[i]) + " is outside [0, " + std::to_string(c.max_sequences) + ")");
    if (b.used[size_t(slot[i])]++) return bad(which() + "slot " + std::to_string(slot[i]) + " appears twice in one batch");
    const int64_t p = pos_[size_t(slot[i])].load(std::memory_order_relaxed);
    if (p + len[i] > c.max_seq)
      return bad(which() + "context is full: " + std::to_string(p) + " positions + " + std::to_string(len[i]) +
                 " new exceed maxSeq " + std::to_string(c.max_seq));
    b.pos[size_t(i)] = p;
    b.row0[size_t(i)] = n;
    b.len[size_t(i)] = len[i];
    b.k_len[size_t(i)] = p + len[i];
    b.slot[size_t(i)] = slot[i];
    n += len[i];
  }
  b.n = n;
  for (int64_t i = 0; i < n; ++i)
    if (tok[i] < 0 || tok[i] >= c.vocab)
      return bad("token id " + std::to_string(tok[i]) + " at index " + std::to_string(i) + " is outside [0, " +
                 std::to_string(c.vocab) + ")");
  prof::Scope whole(prof::kForward);
  if (gpu_) {
    if (calib_) return bad("calibration runs on the CPU; calibrate before moving the model to the GPU");
    if (count != 1 || slot[0] != 0) return Error::make(Status::unsupported, "model: batched decode runs on the CPU");
  }
  LlamaBackend& be = gpu_ ? *gpu_ : *cpu_;
  const Error e = forward_pass(be, c, w_, tok, b, all, calib_, logits);
  if (gpu_) device_bytes_.store(gpu_->device_bytes(), std::memory_order_release);  // activations grow with the chunk
  SPARQ_TRY(e);
  for (int64_t i = 0; i < count; ++i) pos_[size_t(slot[i])].store(b.k_len[size_t(i)], std::memory_order_release);
  return Error{};
}

Error forward_pass(LlamaBackend& be, const LlamaConfig& c, const LlamaWeights& w, const int32_t* tok, const LlamaBatch& b,
                   bool all, const LlamaCalibration* calib, float* logits) {
  const int64_t n = b.n, count = b.count, hd = c.head_dim, kvd = c.kv_heads * hd, dim = c.dim, qd = c.heads * hd;
  const int64_t qkvd = qd + 2 * kvd, stride = 2 * dim + qd + c.hidden;  // LlamaModel::calibration_stride
  // the stage running now (begin: RoPE's tables); a device backend's ops are only
  // queued, so only the whole forward is timed there
  prof::Scope st(prof::kRope, be.synchronous());
  LlamaActs a;
  SPARQ_TRY(be.begin(tok, b, all, logits, &a));
  st.next(prof::kEmbed);
  SPARQ_TRY(be.embed(tok, n, a.x));
  for (int64_t li = 0; li < c.layers; ++li) {
    const LlamaLayer& L = w.layers[size_t(li)];
    st.next(prof::kNorm);
    SPARQ_TRY(be.rmsnorm(li, LlamaNorm::attn, a.x, n, dim, a.xb));
    const int64_t feat = li * stride;
    // X^T X offsets of this layer's four inputs when it is the one being recorded
    double* gram = calib && calib->gram && calib->gram_layer == li ? calib->gram : nullptr;
    if (calib) SPARQ_TRY(be.observe(*calib, a.xb, n, dim, li, 0, feat, gram));
    // q | k | v per token row: one fused linear, or three into the same layout
    float* const qp = a.qkv;
    int64_t ld = qkvd;
    st.next(prof::kQkv);
    if (L.wqkv.present()) {
      SPARQ_TRY(be.linear(li, LlamaLinear::qkv, a.xb, n, qp));
    } else {
      ld = qd;  // three separate [n, *] blocks
      SPARQ_TRY(be.linear(li, LlamaLinear::q, a.xb, n, qp));
      SPARQ_TRY(be.linear(li, LlamaLinear::k, a.xb, n, qp + n * qd));
      SPARQ_TRY(be.linear(li, LlamaLinear::v, a.xb, n, qp + n * (qd + kvd)));
    }
    const bool fused = ld == qkvd;
    float* const kp = fused ? qp + qd : qp + n * qd;
    float* const vp = fused ? qp + qd + kvd : qp + n * (qd + kvd);
    const int64_t kld = fused ? ld : kvd;
    // per sequence [heads, its rows, hd], one sequence after another
    st.next(prof::kHeads);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = b.row0[size_t(i)], len = b.len[size_t(i)];
      SPARQ_TRY(be.to_heads(qp + r * ld, ld, len, c.heads, hd, a.qt + r * qd));
      SPARQ_TRY(be.to_heads(kp + r * kld, kld, len, c.kv_heads, hd, a.kt + r * kvd));
      SPARQ_TRY(be.to_heads(vp + r * kld, kld, len, c.kv_heads, hd, a.vt + r * kvd));
    }
    if (L.q_norm) {  // each head's q and k normalized over its hd features
      st.next(prof::kNorm);
      SPARQ_TRY(be.rmsnorm(li, LlamaNorm::q, a.qt, c.heads * n, hd, a.qt));
      SPARQ_TRY(be.rmsnorm(li, LlamaNorm::k, a.kt, c.kv_heads * n, hd, a.kt));
    }
    st.next(prof::kRope);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = b.row0[size_t(i)], len = b.len[size_t(i)];
      SPARQ_TRY(be.rope(a.qt + r * qd, c.heads, len, hd, i));
      SPARQ_TRY(be.rope(a.kt + r * kvd, c.kv_heads, len, hd, i));
    }
    st.next(prof::kKvStore);
    for (int64_t i = 0; i < count; ++i) SPARQ_TRY(be.kv_store(li, a.kt + b.row0[size_t(i)] * kvd, a.vt + b.row0[size_t(i)] * kvd, i));
    st.next(prof::kAttention);
    SPARQ_TRY(be.attention(li, a.qt, a.att));
    st.next(prof::kHeads);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t r = b.row0[size_t(i)];
      SPARQ_TRY(be.from_heads(a.att + r * qd, b.len[size_t(i)], c.heads, hd, a.qt + r * qd));
    }
    if (calib) SPARQ_TRY(be.observe(*calib, a.qt, n, qd, li, 1, feat + dim, gram ? gram + dim * dim : nullptr));
    st.next(prof::kWo);
    SPARQ_TRY(be.linear(li, LlamaLinear::o, a.qt, n, a.tmp));
    st.next(prof::kResidual);
    SPARQ_TRY(be.add(a.x, a.tmp, n * dim, a.x));
    st.next(prof::kNorm);
    SPARQ_TRY(be.rmsnorm(li, LlamaNorm::ffn, a.x, n, dim, a.xb));
    if (calib) SPARQ_TRY(be.observe(*calib, a.xb, n, dim, li, 2, feat + dim + qd, gram ? gram + dim * dim + qd * qd : nullptr));
    st.next(prof::kFfnUp);
    if (L.w13.present()) {
      // [n, gate | up]: one token's halves are contiguous; more tokens are split out
      SPARQ_TRY(be.linear(li, LlamaLinear::w13, a.xb, n, a.h13));
      st.next(prof::kSwiglu);
      SPARQ_TRY(be.swiglu_rows(a.h13, n, c.hidden, a.h1));
    } else {
      SPARQ_TRY(be.linear(li, LlamaLinear::w1, a.xb, n, a.h1));
      SPARQ_TRY(be.linear(li, LlamaLinear::w3, a.xb, n, a.h3));
      st.next(prof::kSwiglu);
      SPARQ_TRY(be.swiglu(a.h1, a.h3, n * c.hidden, a.h1));
    }
    if (calib)
      SPARQ_TRY(be.observe(*calib, a.h1, n, c.hidden, li, 3, feat + 2 * dim + qd, gram ? gram + 2 * dim * dim + qd * qd : nullptr));
    st.next(prof::kFfnDown);
    SPARQ_TRY(be.linear(li, LlamaLinear::w2, a.h1, n, a.tmp));
    st.next(prof::kResidual);
    SPARQ_TRY(be.add(a.x, a.tmp, n * dim, a.x));
  }
  st.next(prof::kClassifier);
  if (all) {
    SPARQ_TRY(be.rmsnorm(-1, LlamaNorm::final, a.x, n, dim, a.xb));
  } else {  // each sequence's last row
    for (int64_t i = 0; i < count; ++i)
      SPARQ_TRY(be.rmsnorm(-1, LlamaNorm::final, a.x + (b.row0[size_t(i)] + b.len[size_t(i)] - 1) * dim, 1, dim, a.xb + i * dim));
  }
  const int64_t rows = all ? n : count;
  SPARQ_TRY(be.linear(-1, LlamaLinear::output, a.xb, rows, a.logits));
  return be.finish(a, rows, logits);
}

}  // namespace sparq
