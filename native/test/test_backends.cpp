// test_backends.cpp - the forward pass (native/model/llama.cpp, forward_pass)
// through its CUDA backend against its CPU backend, on machines without a GPU:
// linked with cuda_host.cpp (the CUDA library's API on host memory, the CPU
// library's ops behind it), the CUDA backend's uploads, buffers, offsets,
// biases, RoPE positions, KV stores and copies run for real. Random small
// models in every layer shape the model takes (q / k / v and gate / up fused
// or apart, Qwen2 biases, Qwen3 q / k norms, RoPE frequency factors, NeoX
// rotation), f32 and int8 weights, f32 / f16 / int8 KV caches; a prompt with
// every row's logits, then decode steps. Also: the refusals of a model on the
// device (batches, calibration), and device memory back to zero afterwards.
//   test_backends [--seed N]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../model/linear_format.h"
#include "../model/llama.h"
#include "sparq/cuda.h"
#include "sparq/sparq.h"

using namespace sparq;

static std::mt19937_64 g_rng;
static int g_failures = 0, g_cases = 0;

#define FAIL(...)                      \
  do {                                 \
    ++g_failures;                      \
    std::fprintf(stderr, "FAIL ");     \
    std::fprintf(stderr, __VA_ARGS__); \
    std::fprintf(stderr, "\n");        \
  } while (0)

static std::vector<float> randn(size_t n, float std = 1.f, float mean = 0.f) {
  std::normal_distribution<float> d(mean, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}

struct Shape {
  bool fused_qkv, fused_ffn, bias, qk_norm, freqs, neox, int8;
  KvType kv;
};

// Arrays the weights point into (LinearWeight f32 rows and norms are not copied).
struct Arrays {
  std::vector<std::vector<float>> f;
};

static Error linear(Arrays& A, int64_t n, int64_t k, bool int8, LinearWeight* out) {
  A.f.push_back(randn(size_t(n * k), 1.f / std::sqrt(float(k))));
  const std::vector<float>& w = A.f.back();
  if (!int8) {
    *out = f32_linear(w.data(), n, k, nullptr);
    return Error{};
  }
  // per channel: with groups the two sides' contracts differ (the CPU quantizes a
  // grouped weight's activations per block of 32, the CUDA library per row,
  // sparq/cuda.h), which is not what this test is about
  const int64_t group = 0, groups = 1, gs = k;
  std::vector<int8_t> q(size_t(n * k));
  std::vector<float> s(size_t(n * groups));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t g = 0; g < groups; ++g) {
      float mx = 0.f;
      for (int64_t c = g * gs; c < (g + 1) * gs; ++c) mx = std::fmax(mx, std::fabs(w[size_t(j * k + c)]));
      const float sc = mx > 0.f ? mx / 127.f : 1.f;
      s[size_t(j * groups + g)] = sc;
      for (int64_t c = g * gs; c < (g + 1) * gs; ++c) q[size_t(j * k + c)] = int8_t(std::nearbyint(w[size_t(j * k + c)] / sc));
    }
  std::unique_ptr<PackedWeight> p;
  SPARQ_TRY(pack_s8(q.data(), n, k, group, s.data(), nullptr, &p));
  *out = int8_linear(std::shared_ptr<const PackedWeight>(std::move(p)));
  return Error{};
}

static Error make_model(const Shape& sh, Arrays& A, std::unique_ptr<LlamaModel>* out) {
  LlamaConfig c;
  c.dim = 64, c.hidden = 96, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.vocab = 97, c.max_seq = 48;
  c.rope_neox = sh.neox;
  c.kv_type = sh.kv;
  c.norm_eps = 1e-5f;
  const int64_t hd = c.dim / c.heads, qd = c.heads * hd, kvd = c.kv_heads * hd;
  auto vec = [&](int64_t n, float std, float mean) {
    A.f.push_back(randn(size_t(n), std, mean));
    return A.f.back().data();
  };
  LlamaWeights w;
  A.f.push_back(randn(size_t(c.vocab * c.dim)));
  w.embed = f32_linear(A.f.back().data(), c.vocab, c.dim, nullptr);
  w.final_norm = vec(c.dim, 0.1f, 1.f);
  if (sh.freqs) {
    float* f = vec(hd / 2, 0.f, 1.f);
    for (int64_t i = 0; i < hd / 2; ++i) f[i] = 1.f + float(i % 3);
    w.rope_freqs = f;
  }
  w.layers.resize(size_t(c.layers));
  for (LlamaLayer& L : w.layers) {
    L.attn_norm = vec(c.dim, 0.1f, 1.f);
    L.ffn_norm = vec(c.dim, 0.1f, 1.f);
    if (sh.fused_qkv) {
      SPARQ_TRY(linear(A, qd + 2 * kvd, c.dim, sh.int8, &L.wqkv));
    } else {
      SPARQ_TRY(linear(A, qd, c.dim, sh.int8, &L.wq));
      SPARQ_TRY(linear(A, kvd, c.dim, sh.int8, &L.wk));
      SPARQ_TRY(linear(A, kvd, c.dim, sh.int8, &L.wv));
    }
    if (sh.bias) {
      L.bq = vec(qd, 0.5f, 0.f);
      L.bk = vec(kvd, 0.5f, 0.f);
      L.bv = vec(kvd, 0.5f, 0.f);
    }
    if (sh.qk_norm) {
      L.q_norm = vec(hd, 0.1f, 1.f);
      L.k_norm = vec(hd, 0.1f, 1.f);
    }
    SPARQ_TRY(linear(A, c.dim, qd, sh.int8, &L.wo));
    if (sh.fused_ffn) {
      SPARQ_TRY(linear(A, 2 * c.hidden, c.dim, sh.int8, &L.w13));
    } else {
      SPARQ_TRY(linear(A, c.hidden, c.dim, sh.int8, &L.w1));
      SPARQ_TRY(linear(A, c.hidden, c.dim, sh.int8, &L.w3));
    }
    SPARQ_TRY(linear(A, c.dim, c.hidden, sh.int8, &L.w2));
  }
  SPARQ_TRY(linear(A, c.vocab, c.dim, sh.int8, &w.output));
  return LlamaModel::create(c, std::move(w), out);
}

// A 9-token prompt (every row's logits) then 4 decode steps, on one model.
static Error run(LlamaModel& m, const std::vector<int32_t>& tok, std::vector<float>* out) {
  const int64_t V = m.config().vocab, P = 9;
  out->assign(size_t((P + 4) * V), 0.f);
  m.truncate(0);
  SPARQ_TRY(m.forward(tok.data(), P, true, out->data()));
  for (int64_t t = 0; t < 4; ++t) SPARQ_TRY(m.forward(tok.data() + P + t, 1, false, out->data() + (P + t) * V));
  return Error{};
}

static const char* kv_name(KvType t) { return t == KvType::f16 ? "f16" : t == KvType::i8 ? "i8" : "f32"; }

static void check(const Shape& sh) {
  ++g_cases;
  char name[160];
  std::snprintf(name, sizeof name, "qkv %s, ffn %s%s%s%s%s, %s weights, %s cache", sh.fused_qkv ? "fused" : "apart",
                sh.fused_ffn ? "fused" : "apart", sh.bias ? ", biases" : "", sh.qk_norm ? ", q/k norms" : "",
                sh.freqs ? ", rope factors" : "", sh.neox ? ", neox" : "", sh.int8 ? "int8" : "f32", kv_name(sh.kv));
  Arrays A;
  std::unique_ptr<LlamaModel> m;
  if (Error e = make_model(sh, A, &m); !e.ok()) {
    FAIL("%s: %s", name, e.message.c_str());
    return;
  }
  std::vector<int32_t> tok(13);
  for (auto& t : tok) t = int32_t(std::uniform_int_distribution<int>(0, int(m->config().vocab - 1))(g_rng));
  std::vector<float> cpu, dev;
  if (Error e = run(*m, tok, &cpu); !e.ok()) {
    FAIL("%s: CPU: %s", name, e.message.c_str());
    return;
  }
  cuda::Context* ctx = nullptr;
  if (Error e = cuda::context_create(0, &ctx); !e.ok()) {
    FAIL("%s: %s", name, e.message.c_str());
    return;
  }
  if (Error e = m->to_cuda(ctx); !e.ok()) {
    cuda::context_destroy(ctx);
    {
    FAIL("%s: to_cuda: %s", name, e.message.c_str());
    return;
  }
  }
  if (!m->on_cuda() || m->device_bytes() == 0) FAIL("%s: not on the device after to_cuda", name);
  if (Error e = run(*m, tok, &dev); !e.ok()) FAIL("%s: device: %s", name, e.message.c_str());
  // The same ops on the same values; the device's int8 linear sums in its own
  // order (cuda_host.cpp), and an int8 cache rounds its inputs: float rounding only.
  double worst = 0, mag = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    worst = std::fmax(worst, std::fabs(double(cpu[i]) - dev[i]));
    mag = std::fmax(mag, std::fabs(double(cpu[i])));
  }
  if (!(worst <= 1e-4 * std::fmax(1.0, mag))) FAIL("%s: device logits differ from the CPU's by %.3g (max |logit| %.3g)", name, worst, mag);
  // What a model on the device refuses: a batch, calibration (slot 0 emptied)
  const int32_t slot = 0;
  const int64_t len = 1;
  std::vector<float> lg(size_t(m->config().vocab));
  if (m->forward_batch(tok.data(), &len, &slot, 1, lg.data()).ok() == false) FAIL("%s: a one-sequence batch in slot 0 was refused", name);
  LlamaCalibrationResult cal;
  const int32_t l4 = 4;
  if (m->calibrate(tok.data(), &l4, 1, nullptr, 0, -1, &cal).ok()) FAIL("%s: calibration ran on the device", name);
  if (m->pos() != 0) FAIL("%s: calibration's refusal left %lld positions in slot 0", name, (long long)m->pos());
  m.reset();
  cuda::context_destroy(ctx);
  if (cuda::device_allocated_bytes() != 0)
    FAIL("%s: %lld device bytes still held after the model went", name, (long long)cuda::device_allocated_bytes());
}

int main(int argc, char** argv) {
  uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
  g_rng.seed(seed);
  std::printf("test_backends: seed %llu\n", (unsigned long long)seed);
  for (int fused = 0; fused < 2; ++fused)
    for (int extras = 0; extras < 2; ++extras)
      for (int int8 = 0; int8 < 2; ++int8)
        for (KvType kv : {KvType::f32, KvType::f16, KvType::i8})
          check(Shape{fused == 1, fused == 1, extras == 1, extras == 1, extras == 1, extras == 1, int8 == 1, kv});
  // each extra alone, layers apart
  check(Shape{false, true, true, false, false, false, false, KvType::f32});
  check(Shape{true, false, false, true, false, false, false, KvType::f16});
  check(Shape{false, false, false, false, true, true, true, KvType::f32});
  std::printf("test_backends: %d cases, %d failures\n", g_cases, g_failures);
  return g_failures ? 1 : 0;
}
