// backend.h - the ops of the Llama forward pass on one device. The pass itself
// (llama.cpp, forward_pass) is written once over this interface; a backend
// owns its copy of the weights, its KV cache and its activation buffers, and
// every pointer it hands out or takes (but the token ids and the caller's
// logits) is its own memory: host memory for the CPU backend (backend_cpu.cpp,
// the CPU kernel library), device memory for the CUDA one (backend_cuda.cpp,
// the CUDA kernel library, sparq/cuda.h).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "llama.h"

namespace sparq {

// A layer's linears by role (fused or apart, as the weights come); output is
// the classifier (its layer index is ignored).
enum class LlamaLinear { qkv, q, k, v, o, w13, w1, w3, w2, output };
// The RMSNorm weights by role: attn / ffn per layer, q / k per head (Qwen3),
// final before the classifier.
enum class LlamaNorm { attn, ffn, q, k, final };

// The sequences of one forward call: sequence i has len[i] tokens, packed one
// sequence after another; its rows are [row0[i], row0[i] + len[i]) of the n,
// its positions [pos[i], pos[i] + len[i]) of KV slot slot[i].
struct LlamaBatch {
  int64_t count = 0, n = 0;
  std::vector<int64_t> pos, row0, len, k_len, slot;  // k_len = pos + len: the keys each one's queries see
  std::vector<char> used;                            // per slot: given once at most
};

// A chunk's activations (backend memory), token-major [n, features] but for
// qt / kt / vt / att, head-major [heads, n, hd]. Buffers may share memory when
// their lives do not overlap (the attention's and the FFN's, on the CPU).
struct LlamaActs {
  float *x = nullptr, *xb = nullptr, *tmp = nullptr;  // residual, its normed copy, wo / w2 output
  float *qkv = nullptr, *qt = nullptr, *kt = nullptr, *vt = nullptr, *att = nullptr;
  float *h1 = nullptr, *h3 = nullptr, *h13 = nullptr;  // gate (then silu(gate) * up), up; or gate | up fused
  float* logits = nullptr;                              // [rows, vocab]
};

class LlamaBackend {
 public:
  virtual ~LlamaBackend() = default;
  // Activation buffers for the batch (and its rows of logits: n when `all`, else
  // one per sequence). `logits` is the caller's host array: the CPU writes it in place.
  virtual Error begin(const int32_t* tokens, const LlamaBatch& b, bool all, float* logits, LlamaActs* a) = 0;
  // x [n, dim] = the embedding rows of the call's tokens (ids checked)
  virtual Error embed(const int32_t* tokens, int64_t n, float* x) = 0;
  virtual Error rmsnorm(int64_t layer, LlamaNorm w, const float* x, int64_t rows, int64_t d, float* y) = 0;
  // y [m, n] = x [m, k] . W^T, plus the layer's q / k / v bias where it has one
  virtual Error linear(int64_t layer, LlamaLinear w, const float* x, int64_t m, float* y) = 0;
  // [n, h, hd] (rows `ld` floats apart) -> [h, n, hd], and back ([h, n, hd] -> [n, h * hd])
  virtual Error to_heads(const float* x, int64_t ld, int64_t n, int64_t h, int64_t hd, float* y) = 0;
  virtual Error from_heads(const float* x, int64_t n, int64_t h, int64_t hd, float* y) = 0;
  // In place on [heads, len, hd] rows of sequence `seq` of the batch begun
  virtual Error rope(float* x, int64_t heads, int64_t len, int64_t hd, int64_t seq) = 0;
  // Sequence `seq`'s new keys and values [kv_heads, len, hd] into its slot of layer's cache
  virtual Error kv_store(int64_t layer, const float* k, const float* v, int64_t seq) = 0;
  // out [heads, n, hd]: q [heads, n, hd] over each sequence's cached keys (causal)
  virtual Error attention(int64_t layer, const float* q, float* out) = 0;
  virtual Error add(const float* a, const float* b, int64_t n, float* y) = 0;
  virtual Error swiglu(const float* a, const float* b, int64_t n, float* y) = 0;
  // h13 [n, 2 * hidden] (gate | up) -> silu(gate) * up [n, hidden]
  virtual Error swiglu_rows(const float* h13, int64_t n, int64_t hidden, float* y) = 0;
  // Calibration (llama.h): records x [rows, cols], input `input` of `layer`.
  virtual Error observe(const LlamaCalibration& cal, const float* x, int64_t rows, int64_t cols, int64_t layer, int input,
                        int64_t feat, double* gram) = 0;
  // The call's logits to the caller's array (the CPU wrote them there already).
  virtual Error finish(const LlamaActs& a, int64_t rows, float* logits) = 0;
  // Bytes this backend holds on a device (0 on the CPU).
  virtual size_t device_bytes() const { return 0; }
  // Whether each op is done when it returns (the CPU), so that the profile's
  // per-stage times mean something; a device backend only queues them.
  virtual bool synchronous() const { return true; }
};

// The CPU backend: the model's own weights (not copied), a KV cache of
// max_sequences slots. Fails on out-of-memory.
Error make_cpu_backend(const LlamaConfig& c, const LlamaWeights& w, std::unique_ptr<LlamaBackend>* out, size_t* cache_bytes);
// The CUDA backend: the weights uploaded once to ctx's device, a KV cache of one
// slot there. Fails with the reason in a build without CUDA or without a device.
Error make_cuda_backend(cuda::Context* ctx, const LlamaConfig& c, const LlamaWeights& w, std::unique_ptr<LlamaBackend>* out);

// The Llama forward pass of one batch over a backend: per layer RMSNorm -> q/k/v
// linears -> RoPE -> KV store -> attention over the cache -> output linear +
// residual -> RMSNorm -> SwiGLU FFN + residual; then the final norm and the
// classifier on each sequence's last row (all: on every row). `calib` records
// the linears' inputs (CPU only).
Error forward_pass(LlamaBackend& be, const LlamaConfig& c, const LlamaWeights& w, const int32_t* tokens, const LlamaBatch& b,
                   bool all, const LlamaCalibration* calib, float* logits);

}  // namespace sparq
