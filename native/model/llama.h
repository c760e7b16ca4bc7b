// llama.h - the Llama-family decoder (llama2.c / GGUF `llama`, `qwen2`, `qwen3` /
// Hugging Face Llama, Mistral, Qwen2, Qwen3): RMSNorm, rotary attention with
// grouped-query heads and a KV cache, SwiGLU FFN; optional q / k / v biases
// (Qwen2), per-head q / k RMSNorm (Qwen3) and RoPE frequency factors (Llama 3.1). Linear weights are any format of linear_format.h (f32,
// int8, int4, sparse, GGUF blocks); norms are f32. The whole forward pass
// of a chunk of tokens runs here, so one call from JS is one step.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../cpu/q4.h"
#include "../cpu/quants.h"
#include "../cpu/sparse.h"
#include "linear_format.h"
#include "sparq/sparq.h"

namespace sparq {

class LlamaBackend;
struct LlamaBatch;
namespace cuda {
struct Context;
}

struct LlamaConfig {
  int64_t dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, max_seq = 0;
  int64_t head_dim = 0;  // 0: dim / heads (else heads * head_dim may differ from dim: pruned heads)
  float rope_theta = 10000.f;
  float norm_eps = 1e-5f;
  bool rope_neox = false;  // rotate (i, i + d/2) pairs (HF layout) instead of (2i, 2i+1)
  KvType kv_type = KvType::f32;
  // KV cache slots: sequences that can be decoded together (forward_batch), each
  // with its own max_seq positions
  int64_t max_sequences = 1;
};

// wq / wk / wv may come fused as one wqkv [heads*hd + 2*kv*hd, dim] (rows of q,
// then k, then v), and w1 / w3 as one w13 [2*hidden, dim] (gate rows, then up):
// one GEMV instead of three (two) per token.
struct LlamaLayer {
  const float* attn_norm = nullptr;  // [dim]
  LinearWeight wq, wk, wv, wo;       // [heads*hd, dim], [kv*hd, dim] x2, [dim, heads*hd]
  LinearWeight wqkv;                 // or fused
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // optional biases [heads*hd], [kv*hd] x2 (all or none)
  const float *q_norm = nullptr, *k_norm = nullptr;         // optional RMSNorm of each q / k head [hd] (both or none)
  const float* ffn_norm = nullptr;   // [dim]
  LinearWeight w1, w2, w3;           // gate [hidden, dim], down [dim, hidden], up [hidden, dim]
  LinearWeight w13;                  // or fused
};

// What a calibration pass records about the inputs of the linears. Inputs,
// per layer: 0 attention (q, k, v) [dim], 1 output projection [heads *
// head_dim], 2 FFN (gate, up) [dim], 3 down projection [hidden]. Per feature
// arrays have layers * calibration_stride() entries, per input ones layers * 4.
struct LlamaCalibration {
  double* sumsq = nullptr;  // per feature: sum of x^2 (Wanda's norm, squared)
  float* amax = nullptr;    // per feature: max |x| (SmoothQuant)
  float* lo = nullptr;      // per input: min x
  float* hi = nullptr;      // per input: max x
  double* hist = nullptr;   // per input: `bins` counts over [range[2i], range[2i+1]] (values outside go to the end bins)
  int64_t bins = 0;
  const float* range = nullptr;
  // X^T X of the four inputs of one layer (GPTQ): [dim^2 | qd^2 | dim^2 | hidden^2], row-major
  double* gram = nullptr;
  int64_t gram_layer = -1;
};

// What LlamaModel::calibrate records, owned: per feature sum of x^2 and max |x|,
// per (layer, input) min / max and (with ranges) histograms, and (gram layer)
// that layer's four X^T X.
struct LlamaCalibrationResult {
  std::vector<double> sumsq, hist, gram;
  std::vector<float> amax, lo, hi;
};

struct LlamaWeights {
  LinearWeight embed;  // [vocab, dim]: a format with row_f32 (f32, GGUF blocks; rows dequantized on lookup)
  std::vector<LlamaLayer> layers;
  const float* final_norm = nullptr;  // [dim]
  LinearWeight output;                // [vocab, dim] (tied: the embed weight itself)
  const float* rope_freqs = nullptr;  // optional [hd / 2]: RoPE frequency i is divided by rope_freqs[i]
};


class LlamaModel {
 public:
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;
  // Checks shapes and allocates the KV cache (max_seq positions).
  static Error create(const LlamaConfig& cfg, LlamaWeights w, std::unique_ptr<LlamaModel>* out);
  // Appends tokens at positions [pos, pos + n) of slot 0 and writes the logits of
  // the last one (all: of every one, [n, vocab]) to logits. Token ids are checked.
  // One call at a time (the caller serialises forward / forward_batch / truncate).
  Error forward(const int32_t* tokens, int64_t n, bool all, float* logits);
  // One forward pass over `count` sequences at once (continuous batching): sequence
  // i appends lengths[i] tokens (packed one sequence after another in `tokens`) to
  // KV slot slots[i] (distinct, < max_sequences) at that slot's position; the
  // linears read each weight once for all of them, attention runs over each
  // slot's own keys (ragged). Writes the logits of each sequence's last token,
  // [count, vocab]. On CPU; on CUDA only one sequence in slot 0.
  Error forward_batch(const int32_t* tokens, const int64_t* lengths, const int32_t* slots, int64_t count, float* logits);
  // May be read while a forward runs (it then shows the position before it).
  int64_t pos(int64_t slot = 0) const {
    return slot >= 0 && slot < cfg_.max_sequences ? pos_[size_t(slot)].load(std::memory_order_acquire) : 0;
  }
  void truncate(int64_t n, int64_t slot = 0) {
    if (slot >= 0 && slot < cfg_.max_sequences && n < pos(slot)) pos_[size_t(slot)].store(n < 0 ? 0 : n, std::memory_order_release);
  }
  const LlamaConfig& config() const { return cfg_; }
  // Writes the weights as held to one safetensors file (llama_save.cpp); `metadata` is
  // a JSON object of strings added to the header. Not while a forward runs.
  Error save(const std::string& path, const std::string& metadata) const;
  // Calibration: runs each of `count` sequences (lengths[i] tokens, packed one
  // after another) from an empty slot 0 and records its linears' inputs (see
  // LlamaCalibration): `ranges` (layers * 4 lo / hi pairs, or nullptr) with
  // `bins` histogram counts each; gram_layer >= 0 also records that layer's
  // X^T X. Slot 0 is empty afterwards, whatever happens. CPU only.
  Error calibrate(const int32_t* tokens, const int32_t* lengths, int64_t count, const float* ranges, int64_t bins,
                  int64_t gram_layer, LlamaCalibrationResult* out);
  int64_t calibration_stride() const { return 2 * cfg_.dim + cfg_.heads * cfg_.head_dim + cfg_.hidden; }
  int64_t calibration_size() const { return cfg_.layers * calibration_stride(); }
  size_t cache_bytes() const { return cache_bytes_; }
  // Moves the forward pass to a CUDA device (backend.h): the weights are
  // uploaded and the cache starts empty there (pos() is reset to 0). The host
  // weights stay (save() and CPU-side reads keep working).
  Error to_cuda(cuda::Context* ctx);
  // Both may be read while a forward or to_cuda runs on another thread.
  bool on_cuda() const { return device_bytes_.load(std::memory_order_acquire) > 0; }
  size_t device_bytes() const { return device_bytes_.load(std::memory_order_acquire); }

 private:
  LlamaModel() = default;
  LlamaConfig cfg_;
  LlamaWeights w_;
  Error run(const int32_t* tok, const int64_t* len, const int32_t* slot, int64_t count, bool all, float* logits);
  size_t cache_bytes_ = 0;
  std::unique_ptr<std::atomic<int64_t>[]> pos_;  // per slot
  const LlamaCalibration* calib_ = nullptr;
  std::unique_ptr<LlamaBackend> cpu_, gpu_;      // backend.h: the forward pass's ops on the CPU / a CUDA device
  std::atomic<size_t> device_bytes_{0};
  std::unique_ptr<LlamaBatch> batch_;            // run(): the call's sequences (kept: no allocation per token)
};

}  // namespace sparq
