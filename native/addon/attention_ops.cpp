// attention_ops.cpp - fused attention (CPU or CUDA, from where the operands
// live) and the KV cache store, each taking one options object.
#include <cstring>

#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

// --- attention --------------------------------------------------------------------

// attention({ q, qOff, b, hq, tq, d, hkv, tk, cap, kvType, k, kOff, v, vOff, ks?, ksOff, vs?, vsOff,
//             mask?, maskOff, maskSb, maskSh, scale, causal, out, outOff, naive, qType }) -> Promise
// kvType: 0 f32, 1 f16, 2 int8 (ks / vs its scales), 3 bf16 (cuda); qType (cuda): 0 f32, 1 f16, 2 bf16
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool naive = info.Length() > 0 && info[0].IsObject() && info[0].As<Napi::Object>().Get("naive").ToBoolean().Value();
  const char* op = naive ? "attentionNaive" : "attention";
  const Opts in(info, 0, op);
  const bool dev = in.Device("q");
  if (dev && naive) throw Napi::TypeError::New(env, "attentionNaive: runs on the CPU only");
  sparq::AttentionArgs a;
  a.b = in.Int("b", 1, kMaxDim);
  a.hq = in.Int("hq", 1, kMaxDim);
  a.tq = in.Int("tq", 1, kMaxDim);
  a.d = in.Int("d", 1, kMaxDim);
  a.hkv = in.Int("hkv", 1, kMaxDim);
  a.tk = in.Int("tk", 1, kMaxDim);
  a.kv.cap = in.Int("cap", a.tk, kMaxDim);
  const int64_t kvt = in.Int("kvType", 0, dev ? 3 : 2);
  const int64_t qt = dev && in.Has("qType") ? in.Int("qType", 0, 2) : 0;
  if (kvt < 3) a.kv.type = sparq::KvType(kvt);
  const int64_t kv_es = kvt == 3 ? 2 : sparq::kv_elem_size(sparq::KvType(kvt)), q_es = qt == 0 ? 4 : 2;
  const uint64_t qbytes = Bytes(env, op, {a.b, a.hq, a.tq, a.d}, q_es);
  const uint64_t kvbytes = Bytes(env, op, {a.b, a.hkv, a.kv.cap, a.d}, kv_es);
  const bool i8 = kvt == 2;
  const uint64_t sbytes = Bytes(env, op, {a.b, a.hkv, a.kv.cap}, 4);
  const Span q = in.SpanOn("q", qbytes, dev);
  const Span k = in.SpanOn("k", kvbytes, dev);
  const Span v = in.SpanOn("v", kvbytes, dev);
  const Span ks = in.SpanOn("ks", sbytes, dev, !i8);
  const Span vs = in.SpanOn("vs", sbytes, dev, !i8);
  a.mask_sb = in.Has("mask") ? in.Int("maskSb", 0, int64_t(1) << 62) : 0;
  a.mask_sh = in.Has("mask") ? in.Int("maskSh", 0, int64_t(1) << 62) : 0;
  // Last element the mask is read at: (b-1) sb + (hq-1) sh + tq tk - 1.
  uint64_t mlast = Bytes(env, op, {a.tq, a.tk}, 4), t1 = 0, t2 = 0;
  if (__builtin_mul_overflow(uint64_t(a.b - 1), uint64_t(a.mask_sb), &t1) ||
      __builtin_mul_overflow(uint64_t(a.hq - 1), uint64_t(a.mask_sh), &t2) || t1 > (uint64_t(1) << 60) ||
      t2 > (uint64_t(1) << 60))
    throw Napi::RangeError::New(env, std::string(op) + ": mask strides too large");
  mlast += (t1 + t2) * 4;
  const Span mask = in.SpanOn("mask", mlast, dev, true);
  a.scale = float(in.Num("scale"));
  a.causal = in.Bool("causal");
  const Span o_ = in.SpanOn("out", qbytes, dev);
  if (dev) {
    CudaCtx hold = CudaContext(env, op);
  sparq::cuda::Context* ctx = hold.get();
    using sparq::cuda::DType;
    sparq::cuda::Attention c;
    c.q_type = qt == 0 ? DType::f32 : qt == 1 ? DType::f16 : DType::bf16;
    c.kv_type = kvt == 0 ? DType::f32 : kvt == 1 ? DType::f16 : kvt == 2 ? DType::i8 : DType::bf16;
    c.b = a.b, c.hq = a.hq, c.tq = a.tq, c.d = a.d, c.hkv = a.hkv, c.tk = a.tk, c.cap = a.kv.cap;
    c.mask_sb = a.mask_sb, c.mask_sh = a.mask_sh, c.scale = a.scale, c.causal = a.causal;
    return RunAsync(env, [c, q, k, v, ks, vs, mask, o_, ctx, hold]() mutable {
      c.q = q.ptr<void>();
      c.k = k.ptr<void>();
      c.v = v.ptr<void>();
      if (ks.block) c.k_scale = ks.ptr<float>();
      if (vs.block) c.v_scale = vs.ptr<float>();
      if (mask.block) c.mask = mask.ptr<float>();
      c.out = o_.ptr<void>();
      void* scratch = nullptr;
      const size_t sb = sparq::cuda::scratch_bytes_attention(ctx, c);
      if (sb) {
        if (Error e = sparq::cuda::device_alloc(ctx, sb, &scratch); !e.ok()) return e;
      }
      Error e = sparq::cuda::attention(ctx, c, scratch, sb);
      if (scratch) sparq::cuda::device_free(ctx, scratch, sb);
      return e;
    });
  }
  return RunAsync(env, [a, q, k, v, ks, vs, mask, o_, naive]() mutable {
    a.q = q.ptr<float>();
    a.kv.k = k.ptr<void>();
    a.kv.v = v.ptr<void>();
    if (ks.block) a.kv.k_scale = ks.ptr<float>();
    if (vs.block) a.kv.v_scale = vs.ptr<float>();
    if (mask.block) a.mask = mask.ptr<float>();
    a.out = o_.ptr<float>();
    return naive ? sparq::attention_naive(a) : sparq::attention(a);
  });
}

// kvStore({ src, srcOff, b, h, t, d, type, dst, dstOff, scales?, scalesOff, cap, pos }) -> Promise:
// src f32 [b, h, t, d] into rows pos .. pos + t of dst [b, h, cap, d] (type 0 f32, 1 f16, 2 int8 with scales [b, h, cap])
Napi::Value KvStore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "kvStore";
  const Opts in(info, 0, op);
  const int64_t b = in.Int("b", 1, kMaxDim), h = in.Int("h", 1, kMaxDim);
  const int64_t t = in.Int("t", 1, kMaxDim), d = in.Int("d", 1, kMaxDim);
  const auto type = sparq::KvType(in.Int("type", 0, 2));
  const int64_t cap = in.Int("cap", 1, kMaxDim);
  const int64_t pos = in.Int("pos", 0, cap);
  if (pos + t > cap)
    throw Napi::RangeError::New(env, std::string(op) + ": " + std::to_string(t) + " new positions at " +
                                         std::to_string(pos) + " exceed the capacity " + std::to_string(cap));
  const bool dev = in.Device("src");
  const Span src = in.SpanOn("src", Bytes(env, op, {b, h, t, d}, 4), dev);
  const Span dst = in.SpanOn("dst", Bytes(env, op, {b, h, cap, d}, sparq::kv_elem_size(type)), dev);
  const Span sc = in.SpanOn("scales", Bytes(env, op, {b, h, cap}, 4), dev, type != sparq::KvType::i8);
  CudaCtx hold = dev ? CudaContext(env, op) : nullptr;
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(env, [=]() {
    if (ctx) {
      using sparq::cuda::DType;
      const DType dt = type == sparq::KvType::f32 ? DType::f32 : type == sparq::KvType::f16 ? DType::f16 : DType::i8;
      return sparq::cuda::kv_store(ctx, src.ptr<float>(), b, h, t, d, dt, dst.ptr<void>(),
                                   sc.block ? sc.ptr<float>() : nullptr, cap, pos);
    }
    return sparq::kv_store(src.ptr<float>(), b, h, t, d, type, dst.ptr<void>(), sc.block ? sc.ptr<float>() : nullptr,
                           cap, pos);
  });
}

}  // namespace

void RegisterAttention(Napi::Env env, Napi::Object exports) {
  Export(env, exports, {
      {"attention", Attention},
      {"kvStore", KvStore},
  });
}

}  // namespace sparq_addon
