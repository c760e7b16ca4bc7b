// tensor_ops.cpp - f32 products, the small ops, statistics and the machine's
// ceilings. Each op checks that every span fits its storage (the TS layer
// validates shapes and dtypes first, with friendlier messages), copies the
// arguments into a closure and runs the kernel library off the JS thread.
#include <cmath>
#include <cstring>
#include <vector>

#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

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

}  // namespace

void RegisterOps(Napi::Env env, Napi::Object exports) {
  Export(env, exports, {
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
  });
}

}  // namespace sparq_addon
