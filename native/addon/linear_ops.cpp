// linear_ops.cpp - the JS class `Linear`: one linear weight of any format
// (model/linear_format.h) behind one object, and the bindings that go through
// the format table: loading a saved linear, its f32 values, the format names.
#include <cmath>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "../model/linear_format.h"
#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

class Linear : public NativeHandle<Linear, sparq::LinearWeight> {
 public:
  static constexpr const char* kExpected = "a linear weight";
  static constexpr const char* kDisposed = "the weight has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.linear_ctor; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Linear", {InstanceMethod("meta", &Linear::Meta), InstanceMethod("dispose", &Linear::Dispose)});
  }
  explicit Linear(const Napi::CallbackInfo& info) : NativeHandle(info) {}
  static Napi::Object Wrap(Napi::Env env, sparq::LinearWeight w) {
    const auto bytes = int64_t(w.bytes());
    return NativeHandle::Wrap(env, std::move(w), bytes);
  }

 private:
  Napi::Value Meta(const Napi::CallbackInfo& info) {
    const sparq::LinearWeight w = Owned("meta");  // a copy (shared data): a setter run by o.Set could dispose() this object
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("format", w.format->name);
    o.Set("n", double(w.n));
    o.Set("k", double(w.k));
    o.Set("bytes", double(w.bytes()));
    return o;
  }
};

// loadLinear(entry, name, n, k, parts) -> Promise<Linear>: a saved linear through its
// format's `load`. entry: its "sparq.linears" object ({ kind, ...members });
// parts: [{ suffix, dtype, shape, storage, offset, bytes }] (the NAME.* tensors, read).
Napi::Value LoadLinear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "loadModel";
  if (info.Length() < 5 || !info[0].IsObject() || !info[1].IsString() || !info[4].IsArray())
    throw Napi::TypeError::New(env, "loadLinear: expected (entry, name, n, k, parts)");
  auto in = std::make_shared<sparq::SavedLinear>();
  in->name = info[1].As<Napi::String>().Utf8Value();
  in->n = ArgInt(info, 2, op, "n", 1, int64_t(1) << 31);
  in->k = ArgInt(info, 3, op, "k", 1, int64_t(1) << 31);
  Napi::Object entry = info[0].As<Napi::Object>();
  const std::string kind = entry.Get("kind").IsString() ? entry.Get("kind").As<Napi::String>().Utf8Value() : "";
  const sparq::LinearFormat* f = sparq::linear_format(kind);
  if (!f || !f->load) throw Napi::TypeError::New(env, "loadModel: " + in->name + ": unknown kind '" + kind + "'");
  Napi::Array keys = entry.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string key = keys.Get(i).ToString().Utf8Value();
    Napi::Value v = entry.Get(key);
    if (v.IsNumber()) in->nums.emplace_back(key, v.As<Napi::Number>().DoubleValue());
    else if (v.IsBoolean()) in->nums.emplace_back(key, v.As<Napi::Boolean>().Value() ? 1.0 : 0.0);
    else if (v.IsString()) in->texts.emplace_back(key, v.As<Napi::String>().Utf8Value());
  }
  std::vector<BlockPtr> keep;  // the parts' memory, alive until the load has run
  Napi::Array parts = info[4].As<Napi::Array>();
  for (uint32_t i = 0; i < parts.Length(); ++i) {
    if (!parts.Get(i).IsObject()) throw Napi::TypeError::New(env, "loadLinear: parts must be objects");
    Napi::Object po = parts.Get(i).As<Napi::Object>();
    sparq::SavedPart p;
    p.suffix = po.Get("suffix").ToString().Utf8Value();
    p.dtype = po.Get("dtype").ToString().Utf8Value();
    if (!po.Get("shape").IsArray()) throw Napi::TypeError::New(env, "loadLinear: part shape must be an array");
    Napi::Array sh = po.Get("shape").As<Napi::Array>();
    for (uint32_t d = 0; d < sh.Length(); ++d) {
      const double x = sh.Get(d).ToNumber().DoubleValue();
      if (!(x >= 0 && x <= double(int64_t(1) << 40) && x == double(int64_t(x)))) throw Napi::RangeError::New(env, "loadLinear: bad part shape");
      p.shape.push_back(int64_t(x));
    }
    BlockPtr b = Storage::Get(po.Get("storage"), "loadLinear");
    if (b->on_device()) throw Napi::TypeError::New(env, "loadLinear: parts must be in host memory");
    const double off = po.Get("offset").ToNumber().DoubleValue(), bytes = po.Get("bytes").ToNumber().DoubleValue();
    if (!(off >= 0 && bytes >= 0 && off == double(int64_t(off)) && bytes == double(int64_t(bytes)) && uint64_t(off) + uint64_t(bytes) <= b->bytes))
      throw Napi::RangeError::New(env, "loadLinear: part " + p.suffix + " lies outside its storage");
    p.p = static_cast<const char*>(b->p) + int64_t(off);
    p.bytes = int64_t(bytes);
    in->parts.push_back(std::move(p));
    keep.push_back(std::move(b));
  }
  auto out = std::make_shared<sparq::LinearWeight>();
  return RunAsync(
      env,
      [in, f, out, keep]() {
        Error e = f->load(*in, out.get());
        if (!e.ok()) e.message = in->name + ": " + e.message;
        return e;
      },
      [out](Napi::Env e) -> Napi::Value { return Linear::Wrap(e, std::move(*out)); });
}

// linearToF32(weight, out, outOff, sync) -> Promise<void> | void: all n * k values, in f32
// (sync: on the JS thread, for the compression passes that dequantize one weight at a time).
Napi::Value LinearToF32(const Napi::CallbackInfo& info) {
  const char* op = "linearToF32";
  Napi::Env env = info.Env();
  sparq::LinearWeight w = AnyLinear(info[0], op);
  if (!w.present()) throw Napi::TypeError::New(env, "linearToF32: expected a weight (Linear, Packed, Quant4 or Sparse)");
  const Span o = ArgSpan(info, 1, op, "out", uint64_t(w.n) * uint64_t(w.k) * 4);
  if (!(info.Length() > 3 && info[3].ToBoolean().Value())) return RunAsync(env, [w, o]() { return w.format->to_f32(w, o.ptr<float>()); });
  Error e;
  try {
    e = w.format->to_f32(w, o.ptr<float>());
  } catch (const std::bad_alloc&) {
    e = Error::make(sparq::Status::out_of_memory, "out of memory");
  }
  if (!e.ok()) throw Napi::Error::New(env, e.message);
  return env.Undefined();
}

// linearStoredBytes(weight) -> number: the bytes its format saves (the size a report quotes).
Napi::Value LinearStoredBytes(const Napi::CallbackInfo& info) {
  sparq::LinearWeight w = AnyLinear(info[0], "linearStoredBytes");
  if (!w.present()) throw Napi::TypeError::New(info.Env(), "linearStoredBytes: expected a weight (Linear, Packed, Quant4 or Sparse)");
  sparq::SaveList list;
  w.format->save(w, "w", list);
  double bytes = 0;
  for (const sparq::SavedTensor& t : list.tensors) bytes += double(t.bytes);
  return Napi::Number::New(info.Env(), bytes);
}

// linearFormats() -> [{ name, loads }]: the rows of the format table.
Napi::Value LinearFormats(const Napi::CallbackInfo& info) {
  int n = 0;
  const sparq::LinearFormat* const* all = sparq::linear_formats(&n);
  Napi::Array a = Napi::Array::New(info.Env(), size_t(n));
  for (int i = 0; i < n; ++i) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("name", all[i]->name);
    o.Set("loads", all[i]->load != nullptr);  // false: a view of the file the loader places (f32, ggml)
    a.Set(uint32_t(i), o);
  }
  return a;
}

}  // namespace

sparq::LinearWeight AnyLinear(const Napi::Value& v, const char* what) {
  if (const Linear* l = Linear::Find(v)) return l->Owned(what);
  if (Packed::Find(v)) return sparq::int8_linear(Packed::Get(v, what));
  if (!v.IsObject()) return {};
  auto* data = v.Env().GetInstanceData<InstanceData>();
  Napi::Object o = v.As<Napi::Object>();
  if (o.InstanceOf(data->q4_ctor.Value())) return sparq::int4_linear(GetQ4(v, what));
  if (o.InstanceOf(data->sparse_ctor.Value())) return sparq::sparse_linear(GetSparse(v, what));
  return {};
}

void RegisterLinear(Napi::Env env, Napi::Object exports) {
  Linear::Export(env, exports, "Linear");
  Export(env, exports, {
      {"loadLinear", LoadLinear},
      {"linearToF32", LinearToF32},
      {"linearStoredBytes", LinearStoredBytes},
      {"linearFormats", LinearFormats},
  });
}

}  // namespace sparq_addon
