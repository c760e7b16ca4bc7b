// q4_ops.cpp - the JS `Quant4` class (a 4-bit weight, packed two per byte) and
// its constructors: round-to-nearest, from integer values (GPTQ), from saved
// nibbles; and the 4-bit linear.
#include <cstring>

#include "../cpu/gptq.h"
#include "../cpu/q4.h"
#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

class Quant4 : public NativeHandle<Quant4, std::shared_ptr<sparq::PackedQ4>> {
 public:
  static constexpr const char* kExpected = "a 4-bit weight";
  static constexpr const char* kDisposed = "4-bit weight has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.q4_ctor; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Quant4", {InstanceMethod("meta", &Quant4::Meta), InstanceMethod("dispose", &Quant4::Dispose)});
  }
  explicit Quant4(const Napi::CallbackInfo& info) : NativeHandle(info) {}
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<sparq::PackedQ4> p) {
    const auto bytes = int64_t(p->bytes());
    return NativeHandle::Wrap(env, std::move(p), bytes);
  }

 private:
  Napi::Value Meta(const Napi::CallbackInfo& info) {
    const auto keep = Owned("meta");  // held for the call: a setter run by o.Set could dispose() this object
    const sparq::PackedQ4& p = *keep;
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("n", double(p.n));
    o.Set("k", double(p.k));
    o.Set("group", double(p.group));
    o.Set("bytes", double(p.bytes()));
    return o;
  }
};

Napi::Value Resolve(Napi::Env env, const std::shared_ptr<std::unique_ptr<sparq::PackedQ4>>& out) {
  return Quant4::Wrap(env, std::shared_ptr<sparq::PackedQ4>(std::move(*out)));
}

// q4Quantize(w, off, n, k, group) -> Promise<Quant4> (round to nearest)
Napi::Value Q4Quantize(const Napi::CallbackInfo& info) {
  const char* op = "quantize";
  const int64_t n = ArgInt(info, 2, op, "n", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, int64_t(1) << 20);
  const int64_t group = ArgInt(info, 4, op, "group", 1, 1024);
  const Span w = ArgSpan(info, 0, op, "w", uint64_t(n) * uint64_t(k) * 4);
  auto out = std::make_shared<std::unique_ptr<sparq::PackedQ4>>();
  return RunAsync(info.Env(), [w, n, k, group, out]() { return sparq::q4_quantize(w.ptr<float>(), n, k, group, out.get()); },
                  [out](Napi::Env e) { return Resolve(e, out); });
}

// q4Nibbles(q4) -> Uint8Array [n, k_pad / 2] and scales Float32Array [n, groups] (for saving and tests)
Napi::Value Q4Parts(const Napi::CallbackInfo& info) {
  auto p = Quant4::Get(info[0], "q4Parts");
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Uint8Array nib = Napi::Uint8Array::New(env, size_t(p->n * p->row_bytes()));
  std::memcpy(nib.Data(), p->data.data(), nib.ElementLength());
  Napi::Float32Array sc = Napi::Float32Array::New(env, p->scale.size());
  std::memcpy(sc.Data(), p->scale.data(), p->scale.size() * 4);
  Napi::Int8Array vals = Napi::Int8Array::New(env, size_t(p->n * p->k));
  sparq::q4_unpack(*p, vals.Data());
  o.Set("nibbles", nib);
  o.Set("scales", sc);
  o.Set("values", vals);
  return o;
}

// linearQ4(q4, x, xOff, m, out, outOff) -> Promise
Napi::Value LinearQ4(const Napi::CallbackInfo& info) {
  const char* op = "linear";
  auto p = Quant4::Get(info[0], op);
  const int64_t m = ArgInt(info, 3, op, "m", 1, kMaxDim);
  const Span x = ArgSpan(info, 1, op, "x", uint64_t(m) * uint64_t(p->k) * 4);
  const Span o = ArgSpan(info, 4, op, "out", uint64_t(m) * uint64_t(p->n) * 4);
  return RunAsync(info.Env(), [p, x, m, o]() { return sparq::linear_q4(*p, x.ptr<float>(), m, o.ptr<float>()); });
}

// gptq(w, off, n, k, H Float64Array [k * k], bits, group, dampening) -> Promise<{ packed | q4, error, rtnError }>:
// 8 bits -> an int8 Packed (group 0: per channel), 4 bits -> a Quant4 (group 32, 64 or 128)
Napi::Value Gptq(const Napi::CallbackInfo& info) {
  const char* op = "gptq";
  Napi::Env env = info.Env();
  const int64_t n = ArgInt(info, 2, op, "n", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, int64_t(1) << 16);
  const Span w = ArgSpan(info, 0, op, "w", uint64_t(n) * uint64_t(k) * 4);
  if (info.Length() < 5 || !info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      int64_t(info[4].As<Napi::TypedArray>().ElementLength()) != k * k)
    throw Napi::TypeError::New(env, "gptq: H must be a Float64Array of k * k");
  Napi::Float64Array ha = info[4].As<Napi::Float64Array>();
  auto h = std::make_shared<std::vector<double>>(ha.Data(), ha.Data() + ha.ElementLength());
  sparq::GptqOptions o;
  o.bits = int(ArgInt(info, 5, op, "bits", 4, 8));
  if (o.bits != 8 && o.bits != 4) throw Napi::RangeError::New(env, "gptq: bits must be 8 or 4");
  const int64_t group = ArgInt(info, 6, op, "group", 0, int64_t(1) << 16);
  // the layouts the result is packed into: int4 groups of 32 / 64 / 128; int8 per channel or the packed int8 groups
  if (o.bits == 4 ? !(group == 32 || group == 64 || group == 128)
                  : !(group == 0 || group >= k || (group % 4 == 0 && (group % 64 == 0 || 64 % group == 0))))
    throw Napi::RangeError::New(env, "gptq: group " + std::to_string(group) + " is not a layout of " + std::to_string(o.bits) + "-bit weights");
  o.group = group >= k ? 0 : group;  // one group: per row
  o.dampening = ArgNum(info, 7, op, "dampening");
  struct Res {
    std::shared_ptr<sparq::PackedWeight> packed;
    std::shared_ptr<sparq::PackedQ4> q4;
    sparq::GptqStats stats;
  };
  auto res = std::make_shared<Res>();
  return RunAsync(
      env,
      [w, n, k, h, o, group, res]() {
        const int64_t groups = o.group ? (k + o.group - 1) / o.group : 1;
        std::vector<int8_t> q;
        std::vector<float> s;
        try {
          q.resize(size_t(n * k));
          s.resize(size_t(n * groups));
        } catch (const std::bad_alloc&) {
          return Error::make(sparq::Status::out_of_memory, "gptq: out of memory");
        }
        Error e = sparq::gptq_quantize(w.ptr<float>(), n, k, h->data(), o, q.data(), s.data(), &res->stats);
        if (!e.ok()) return e;
        if (o.bits == 8) {
          std::unique_ptr<sparq::PackedWeight> p;
          e = sparq::pack_s8(q.data(), n, k, o.group, s.data(), nullptr, &p);
          res->packed = std::move(p);
          return e;
        }
        // int4 scales are per group of `group` (a single group repeats the row's scale)
        const int64_t g4 = (k + group - 1) / group;
        std::vector<float> sg(size_t(n * g4));
        for (int64_t j = 0; j < n; ++j)
          for (int64_t g = 0; g < g4; ++g) sg[size_t(j * g4 + g)] = s[size_t(j * groups + (o.group ? g : 0))];
        std::unique_ptr<sparq::PackedQ4> p;
        e = sparq::q4_pack(q.data(), sg.data(), n, k, group, &p);
        res->q4 = std::move(p);
        return e;
      },
      [res](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        if (res->packed) o.Set("packed", Packed::Wrap(e, res->packed));
        if (res->q4) o.Set("q4", Quant4::Wrap(e, res->q4));
        o.Set("error", res->stats.error);
        o.Set("rtnError", res->stats.rtn_error);
        return o;
      });
}

}  // namespace

std::shared_ptr<sparq::PackedQ4> GetQ4(const Napi::Value& v, const char* what) { return Quant4::Get(v, what); }

void RegisterQ4(Napi::Env env, Napi::Object exports) {
  Quant4::Export(env, exports, "Quant4");
  Export(env, exports, {
      {"q4Quantize", Q4Quantize},
      {"q4Parts", Q4Parts},
      {"linearQ4", LinearQ4},
      {"gptq", Gptq},
  });
}

}  // namespace sparq_addon
