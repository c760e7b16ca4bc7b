// int8_ops.cpp - int8 weights from JS: the Packed class's methods, per-channel /
// grouped quantization, raw int8 packing, dequantization, the exact int8
// matmul and the int8 linear. Each op checks that every span fits its storage
// and runs the kernel library off the JS thread.
#include <cstring>

#include "addon.h"

namespace sparq_addon {

using sparq::Error;

// --- Packed -------------------------------------------------------------------------
Napi::Function Packed::Define(Napi::Env env) {
  return DefineClass(env, "Packed",
                     {InstanceMethod("unpack", &Packed::Unpack), InstanceMethod("dispose", &Packed::Dispose),
                      InstanceMethod("meta", &Packed::Meta)});
}

Napi::Value Packed::Meta(const Napi::CallbackInfo& info) {
  const auto keep = Owned();  // held for the call: a setter run by o.Set could dispose() this object
  const sparq::PackedWeight& w = *keep;
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
  const auto keep = Owned();
  const sparq::PackedS8& b = keep->view();
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
  return RunMaybeSync(
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
  return RunMaybeSync(info.Env(), sync, [w, o]() {
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

}  // namespace

void RegisterInt8(Napi::Env env, Napi::Object exports) {
  Export(env, exports, {
      {"quantizeWeight", QuantizeWeight},
      {"packS8", PackS8},
      {"dequantize", Dequantize},
      {"matmulS8", MatmulS8},
      {"linearS8", LinearS8},
  });
}

}  // namespace sparq_addon
