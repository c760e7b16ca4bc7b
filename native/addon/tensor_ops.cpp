// tensor_ops.cpp - the Packed weight class and the op bindings. Each op checks
// that every span fits its storage (the TS layer validates shapes and dtypes
// first, with friendlier messages), copies the arguments into a closure and
// runs the kernel library off the JS thread.
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "addon.h"

namespace sparq_addon {

using sparq::Error;

// Largest dimension accepted from JS. With dims <= 2^30 a byte count of two
// dims and an element size <= 4 stays under 2^62, so those span checks cannot
// overflow; a count of three dims or more goes through Bytes (checked).
constexpr int64_t kMaxDim = int64_t(1) << 30;

// Product of dims times an element size, or a RangeError when it overflows 2^62.
uint64_t Bytes(const Napi::Env& env, const char* op, std::initializer_list<int64_t> dims, int64_t es) {
  uint64_t n = uint64_t(es);
  for (int64_t d : dims)
    if (__builtin_mul_overflow(n, uint64_t(d), &n) || n > (uint64_t(1) << 62))
      throw Napi::RangeError::New(env, std::string(op) + ": sizes too large");
  return n;
}

// --- Packed -------------------------------------------------------------------------
Napi::Function Packed::Define(Napi::Env env) {
  return DefineClass(env, "Packed",
                     {InstanceMethod("unpack", &Packed::Unpack), InstanceMethod("dispose", &Packed::Dispose),
                      InstanceMethod("meta", &Packed::Meta)});
}

Napi::Value Packed::Meta(const Napi::CallbackInfo& info) {
  const sparq::PackedWeight& w = *Owned();
  const sparq::PackedS8& b = w.view();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("n", double(b.n));
  o.Set("k", double(b.k));
  o.Set("groups", double(b.groups));
  o.Set("group", double(w.user_group()));
  o.Set("kPad", double(b.k_pad));
  o.Set("bytes", double(w.bytes()));
  o.Set("asymmetric", w.asymmetric());
  o.Set("hasScales", b.scales != nullptr);
  return o;
}

// unpack() -> { values: ArrayBuffer (int8 n*k), scales: ArrayBuffer (f32 n*groups), zeros: ArrayBuffer (i32 n*groups) }
Napi::Value Packed::Unpack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const sparq::PackedS8& b = Owned()->view();
  Napi::ArrayBuffer values = Napi::ArrayBuffer::New(env, size_t(b.n * b.k));
  Napi::ArrayBuffer scales = Napi::ArrayBuffer::New(env, size_t(b.n * b.groups) * 4);
  Napi::ArrayBuffer zeros = Napi::ArrayBuffer::New(env, size_t(b.n * b.groups) * 4);
  sparq::unpack_s8(b, static_cast<int8_t*>(values.Data()), static_cast<float*>(scales.Data()),
                   static_cast<int32_t*>(zeros.Data()));
  Napi::Object o = Napi::Object::New(env);
  o.Set("values", values);
  o.Set("scales", scales);
  o.Set("zeros", zeros);
  return o;
}

namespace {

// Runs on the JS thread when `sync` (cheap one-time preparation the API
// exposes synchronously, like quantize()), else off-thread with a Promise.
Napi::Value Run(Napi::Env env, bool sync, std::function<Error()> work,
                std::function<Napi::Value(Napi::Env)> done = nullptr) {
  if (!sync) return RunAsync(env, std::move(work), std::move(done));
  Error e;
  try {
    e = work();
  } catch (const std::bad_alloc&) {
    e = Error::make(sparq::Status::out_of_memory, "out of memory");
  }
  if (!e.ok()) throw Napi::Error::New(env, e.message);
  return done ? done(env) : env.Undefined();
}

Napi::Value ResolvePacked(Napi::Env env, std::shared_ptr<std::shared_ptr<sparq::PackedWeight>> out) {
  return Packed::Wrap(env, std::move(*out));
}

// quantizeWeight(w, wOff, n, k, group, asymmetric, sync) -> Packed | Promise<Packed>
Napi::Value QuantizeWeight(const Napi::CallbackInfo& info) {
  const char* op = "quantize";
  const int64_t n = ArgInt(info, 2, op, "n", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  const int64_t group = ArgInt(info, 4, op, "groupSize", 0, kMaxDim);
  const bool asym = info.Length() > 5 && info[5].ToBoolean().Value();
  const Span w = ArgSpan(info, 0, op, "weight", uint64_t(n) * uint64_t(k) * 4);
  const bool sync = info.Length() > 6 && info[6].ToBoolean().Value();
  auto out = std::make_shared<std::shared_ptr<sparq::PackedWeight>>();
  return Run(
      info.Env(), sync,
      [w, n, k, group, asym, out]() {
        sparq::QuantizeOptions opt;
        opt.group = group;
        opt.asymmetric = asym;
        std::unique_ptr<sparq::PackedWeight> p;
        Error e = sparq::quantize_weight(w.ptr<float>(), n, k, opt, &p);
        *out = std::move(p);
        return e;
      },
      [out](Napi::Env env) { return ResolvePacked(env, out); });
}

// packS8(values, off, n, k) -> Promise<Packed>  (raw int8 matrix for exact matmul)
Napi::Value PackS8(const Napi::CallbackInfo& info) {
  const char* op = "matmulInt8";
  const int64_t n = ArgInt(info, 2, op, "n", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  const Span v = ArgSpan(info, 0, op, "b", uint64_t(n) * uint64_t(k));
  auto out = std::make_shared<std::shared_ptr<sparq::PackedWeight>>();
  return RunAsync(
      info.Env(),
      [v, n, k, out]() {
        std::unique_ptr<sparq::PackedWeight> p;
        Error e = sparq::pack_s8(v.ptr<int8_t>(), n, k, 0, nullptr, nullptr, &p);
        *out = std::move(p);
        return e;
      },
      [out](Napi::Env env) { return ResolvePacked(env, out); });
}

// dequantize(packed, out, outOff, sync) -> void | Promise<void>
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  auto w = Packed::Get(info[0], "dequantize");
  const sparq::PackedS8& b = w->view();
  const Span o = ArgSpan(info, 1, "dequantize", "out", uint64_t(b.n) * uint64_t(b.k) * 4);
  const bool sync = info.Length() > 3 && info[3].ToBoolean().Value();
  return Run(info.Env(), sync, [w, o]() {
    sparq::dequantize_weight(w->view(), o.ptr<float>());
    return Error{};
  });
}

// matmulS8(a, aOff, m, k, packed, out, outOff) -> Promise<void>
Napi::Value MatmulS8(const Napi::CallbackInfo& info) {
  const char* op = "matmulInt8";
  const int64_t m = ArgInt(info, 2, op, "m", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  auto w = Packed::Get(info[4], op);
  const sparq::PackedS8& b = w->view();
  if (b.k != k) throw Napi::RangeError::New(info.Env(), "matmulInt8: k mismatch");
  const Span a = ArgSpan(info, 0, op, "a", uint64_t(m) * uint64_t(k));
  const Span o = ArgSpan(info, 5, op, "out", uint64_t(m) * uint64_t(b.n) * 4);
  return RunAsync(info.Env(), [a, o, w, m, k]() { return sparq::matmul_s8(a.ptr<int8_t>(), m, k, w->view(), o.ptr<int32_t>()); });
}

// linearS8(x, xOff, m, k, packed, bias|null, biasOff, staticScale, out, outOff) -> Promise<void>
Napi::Value LinearS8(const Napi::CallbackInfo& info) {
  const char* op = "linear";
  const int64_t m = ArgInt(info, 2, op, "m", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  auto w = Packed::Get(info[4], op);
  const sparq::PackedS8& b = w->view();
  if (b.k != k) throw Napi::RangeError::New(info.Env(), "linear: k mismatch");
  const Span x = ArgSpan(info, 0, op, "x", uint64_t(m) * uint64_t(k) * 4);
  const Span bias = ArgSpan(info, 5, op, "bias", uint64_t(b.n) * 4, true);
  const float ss = float(ArgNum(info, 7, op, "inputScale"));
  const Span o = ArgSpan(info, 8, op, "out", uint64_t(m) * uint64_t(b.n) * 4);
  return RunAsync(info.Env(), [x, bias, o, w, m, k, ss]() {
    return sparq::linear_s8(x.ptr<float>(), m, k, w->view(), bias.block ? bias.ptr<float>() : nullptr, ss,
                            o.ptr<float>());
  });
}

// matmulF32(a, aOff, m, k, b, bOff, n, bias|null, biasOff, out, outOff)
// linearF32(x, xOff, m, k, w, wOff, n, bias|null, biasOff, out, outOff)
template <bool kLinear>
Napi::Value F32Op(const Napi::CallbackInfo& info) {
  const char* op = kLinear ? "linear" : "matmul";
  const int64_t m = ArgInt(info, 2, op, "m", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  const int64_t n = ArgInt(info, 6, op, "n", 1, kMaxDim);
  const bool dev = kLinear && DeviceOf(info, 0);
  const Span a = ArgSpanOn(info, 0, op, "a", uint64_t(m) * uint64_t(k) * 4, dev);
  const Span b = ArgSpanOn(info, 4, op, "b", uint64_t(k) * uint64_t(n) * 4, dev);
  const Span bias = ArgSpanOn(info, 7, op, "bias", uint64_t(n) * 4, dev, true);
  const Span o = ArgSpanOn(info, 9, op, "out", uint64_t(m) * uint64_t(n) * 4, dev);
  CudaCtx hold = dev ? CudaContext(info.Env(), op) : nullptr;
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [a, b, bias, o, m, k, n, ctx, hold]() {
    const float* bp = bias.block ? bias.ptr<float>() : nullptr;
    if (ctx) return sparq::cuda::linear_f32(ctx, a.ptr<float>(), m, k, b.ptr<float>(), n, bp, o.ptr<float>());
    return kLinear ? sparq::linear_f32(a.ptr<float>(), m, k, b.ptr<float>(), n, bp, o.ptr<float>())
                   : sparq::matmul_f32(a.ptr<float>(), m, k, b.ptr<float>(), n, bp, o.ptr<float>());
  });
}

// stats(x, off, count, bins, lo, hi) -> Promise<{min, max, histogram?: Float64Array}>
// bins = 0: only min/max. lo/hi give the histogram range.
Napi::Value Stats(const Napi::CallbackInfo& info) {
  const char* op = "observe";
  const int64_t count = ArgInt(info, 2, op, "count", 0, int64_t(1) << 44);
  const int64_t bins = ArgInt(info, 3, op, "bins", 0, 1 << 20);
  const float lo = float(ArgNum(info, 4, op, "lo")), hi = float(ArgNum(info, 5, op, "hi"));
  const Span x = ArgSpan(info, 0, op, "x", uint64_t(count) * 4);
  struct Out { float mn = 0, mx = 0; std::vector<double> hist; };
  auto out = std::make_shared<Out>();
  return RunAsync(
      info.Env(),
      [x, count, bins, lo, hi, out]() {
        sparq::minmax_f32(x.ptr<float>(), count, &out->mn, &out->mx);
        if (bins > 0) {
          out->hist.resize(size_t(bins));
          sparq::histogram_f32(x.ptr<float>(), count, lo, hi, bins, out->hist.data());
        }
        return Error{};
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("min", out->mn);
        o.Set("max", out->mx);
        if (!out->hist.empty()) {
          Napi::Float64Array h = Napi::Float64Array::New(env, out->hist.size());
          std::memcpy(h.Data(), out->hist.data(), out->hist.size() * 8);
          o.Set("histogram", h);
        }
        return o;
      });
}

// ceilings(dramBytes) -> Promise<{ fp32Avx2Gops, int8Avx2Gops, fp32Avx512Gops, int8AvxvnniGops,
// int8Avx512vnniGops (0: not on this CPU), dramReadGBs, threads }>
Napi::Value MeasureCeilings(const Napi::CallbackInfo& info) {
  const int64_t bytes = ArgInt(info, 0, "ceilings", "dramBytes", 0, int64_t(1) << 36);
  auto out = std::make_shared<sparq::Ceilings>();
  return RunAsync(
      info.Env(),
      [bytes, out]() {
        *out = sparq::measure_ceilings(bytes);
        return Error{};
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("fp32Avx2Gops", out->fp32_avx2_gops);
        o.Set("int8Avx2Gops", out->int8_avx2_gops);
        o.Set("fp32Avx512Gops", out->fp32_avx512_gops);
        o.Set("int8AvxvnniGops", out->int8_avxvnni_gops);
        o.Set("int8Avx512vnniGops", out->int8_avx512vnni_gops);
        o.Set("dramReadGBs", out->dram_read_gbs);
        o.Set("threads", out->threads);
        return o;
      });
}

// --- small ops (Promise-returning, except argmax) -----------------------------------
// argmax(x: Float32Array) -> the index of the largest element (the first of equal ones),
// or -1 - i for the first NaN / +inf. Synchronous: a vocabulary's logits take microseconds.
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(env, "argmax: x must be a Float32Array");
  Napi::Float32Array x = info[0].As<Napi::Float32Array>();
  return Napi::Number::New(env, double(sparq::argmax_f32(x.Data(), int64_t(x.ElementLength()))));
}

// rmsnorm(x, xOff, rows, d, w, wOff, eps, out, outOff)
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  const char* op = "rmsnorm";
  const int64_t rows = ArgInt(info, 2, op, "rows", 1, kMaxDim), d = ArgInt(info, 3, op, "d", 1, kMaxDim);
  const bool dev = DeviceOf(info, 0);
  const Span x = ArgSpanOn(info, 0, op, "x", uint64_t(rows) * uint64_t(d) * 4, dev);
  const Span w = ArgSpanOn(info, 4, op, "weight", uint64_t(d) * 4, dev);
  const float eps = float(ArgNum(info, 6, op, "eps"));
  const Span o = ArgSpanOn(info, 7, op, "out", uint64_t(rows) * uint64_t(d) * 4, dev);
  CudaCtx hold = dev ? CudaContext(info.Env(), op) : nullptr;
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [x, w, o, rows, d, eps, ctx, hold]() {
    return ctx ? sparq::cuda::rmsnorm(ctx, x.ptr<float>(), w.ptr<float>(), rows, d, eps, o.ptr<float>())
               : sparq::rmsnorm(x.ptr<float>(), w.ptr<float>(), rows, d, eps, o.ptr<float>());
  });
}

// softmax(x, xOff, rows, n, out, outOff)
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  const char* op = "softmax";
  const int64_t rows = ArgInt(info, 2, op, "rows", 1, kMaxDim), n = ArgInt(info, 3, op, "n", 1, kMaxDim);
  const bool dev = DeviceOf(info, 0);
  const Span x = ArgSpanOn(info, 0, op, "x", uint64_t(rows) * uint64_t(n) * 4, dev);
  const Span o = ArgSpanOn(info, 4, op, "out", uint64_t(rows) * uint64_t(n) * 4, dev);
  CudaCtx hold = dev ? CudaContext(info.Env(), op) : nullptr;
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [x, o, rows, n, ctx, hold]() {
    return ctx ? sparq::cuda::softmax(ctx, x.ptr<float>(), rows, n, o.ptr<float>())
               : sparq::softmax(x.ptr<float>(), rows, n, o.ptr<float>());
  });
}

// swiglu / add (a, aOff, b, bOff, n, out, outOff)
template <bool kSwiglu>
Napi::Value Binary(const Napi::CallbackInfo& info) {
  const char* op = kSwiglu ? "swiglu" : "add";
  const int64_t n = ArgInt(info, 4, op, "n", 1, int64_t(1) << 40);
  const bool dev = DeviceOf(info, 0);
  const Span a = ArgSpanOn(info, 0, op, "a", uint64_t(n) * 4, dev);
  const Span b = ArgSpanOn(info, 2, op, "b", uint64_t(n) * 4, dev);
  const Span o = ArgSpanOn(info, 5, op, "out", uint64_t(n) * 4, dev);
  CudaCtx hold = dev ? CudaContext(info.Env(), op) : nullptr;
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [a, b, o, n, ctx, hold]() {
    if (ctx)
      return kSwiglu ? sparq::cuda::swiglu(ctx, a.ptr<float>(), b.ptr<float>(), n, o.ptr<float>())
                     : sparq::cuda::add(ctx, a.ptr<float>(), b.ptr<float>(), n, o.ptr<float>());
    return kSwiglu ? sparq::swiglu(a.ptr<float>(), b.ptr<float>(), n, o.ptr<float>())
                   : sparq::add(a.ptr<float>(), b.ptr<float>(), n, o.ptr<float>());
  });
}

// rope(x, xOff, bh, t, d, pos0, theta, neox, out, outOff)
Napi::Value Rope(const Napi::CallbackInfo& info) {
  const char* op = "rope";
  const int64_t bh = ArgInt(info, 2, op, "batch*heads", 1, kMaxDim), t = ArgInt(info, 3, op, "t", 1, kMaxDim);
  const int64_t d = ArgInt(info, 4, op, "d", 1, kMaxDim);
  const int64_t pos0 = ArgInt(info, 5, op, "offset", 0, kMaxDim);
  const float theta = float(ArgNum(info, 6, op, "theta"));
  const bool neox = info.Length() > 7 && info[7].ToBoolean().Value();
  const bool dev = DeviceOf(info, 0);
  // three dims: the product can pass 2^64, so it is checked (Bytes) rather than wrapped
  const uint64_t bytes = Bytes(info.Env(), op, {bh, t, d}, 4);
  const Span x = ArgSpanOn(info, 0, op, "x", bytes, dev);
  const Span o = ArgSpanOn(info, 8, op, "out", bytes, dev);
  CudaCtx hold = dev ? CudaContext(info.Env(), op) : nullptr;
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [x, o, bh, t, d, pos0, theta, neox, ctx, hold]() {
    if (ctx) return sparq::cuda::rope(ctx, x.ptr<float>(), bh, t, d, pos0, theta, neox, o.ptr<float>());
    return sparq::rope(x.ptr<float>(), bh, t, d, pos0, theta, neox, o.ptr<float>());
  });
}

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

void RegisterOps(Napi::Env env, Napi::Object exports) {
  Export(env, exports, {
      {"quantizeWeight", QuantizeWeight},
      {"packS8", PackS8},
      {"dequantize", Dequantize},
      {"matmulS8", MatmulS8},
      {"linearS8", LinearS8},
      {"matmulF32", F32Op<false>},
      {"linearF32", F32Op<true>},
      {"stats", Stats},
      {"ceilings", MeasureCeilings},
      {"argmax", Argmax},
      {"rmsnorm", RmsNorm},
      {"softmax", Softmax},
      {"swiglu", Binary<true>},
      {"add", Binary<false>},
      {"rope", Rope},
      {"attention", Attention},
      {"kvStore", KvStore},
  });
}

}  // namespace sparq_addon
