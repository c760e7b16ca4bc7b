// cuda_ops.cpp - the device-only bindings: the `DeviceWeight` class (a linear
// weight uploaded to the GPU from an int8 / int4 / sparse CPU weight), the
// linear and exact int8 matmul on device memory, and device memory queries.
// Ops that run on either device (small ops, attention, f32 linear) live in
// tensor_ops.cpp and pick the device from their operands.
#include <cmath>

#include "../cpu/q4.h"
#include "../model/device_linear.h"
#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

class DeviceWeight : public NativeHandle<DeviceWeight, std::shared_ptr<sparq::DeviceLinear>> {
 public:
  static constexpr const char* kExpected = "a weight on cuda";
  static constexpr const char* kDisposed = "weight has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.device_weight_ctor; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DeviceWeight",
                       {InstanceMethod("meta", &DeviceWeight::Meta), InstanceMethod("dispose", &DeviceWeight::Dispose)});
  }
  explicit DeviceWeight(const Napi::CallbackInfo& info) : NativeHandle(info) {}
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<sparq::DeviceLinear> w) {
    const auto bytes = int64_t(w->mem.bytes());
    return NativeHandle::Wrap(env, std::move(w), bytes);
  }

 private:
  Napi::Value Meta(const Napi::CallbackInfo& info) {
    // held for the call: a setter run by o.Set could dispose() this object
    const auto keep = Owned("meta");
    const sparq::DeviceLinear& w = *keep;
    static const char* kinds[] = {"f32", "int8", "csr", "nm"};
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("n", double(w.n));
    o.Set("k", double(w.k));
    o.Set("kind", kinds[int(w.kind)]);
    o.Set("bytes", double(w.mem.bytes()));
    return o;
  }
};

// Uploads run off the JS thread; the result wraps into a DeviceWeight.
Napi::Value Upload(Napi::Env env, std::function<Error(std::unique_ptr<sparq::DeviceLinear>*)> up) {
  auto out = std::make_shared<std::shared_ptr<sparq::DeviceLinear>>();
  return RunAsync(
      env,
      [up, out]() {
        std::unique_ptr<sparq::DeviceLinear> d;
        Error e = up(&d);
        if (e.ok()) *out = std::move(d);
        return e;
      },
      [out](Napi::Env e) -> Napi::Value { return DeviceWeight::Wrap(e, *out); });
}

// cudaUploadPacked(packed, staticScale) -> Promise<DeviceWeight>
Napi::Value UploadPacked(const Napi::CallbackInfo& info) {
  auto w = Packed::Get(info[0], "to('cuda')");
  const float ss = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().FloatValue() : 0.f;
  CudaCtx hold = CudaContext(info.Env(), "to('cuda')");
  sparq::cuda::Context* ctx = hold.get();
  return Upload(info.Env(), [w, ss, ctx, hold](std::unique_ptr<sparq::DeviceLinear>* d) {
    return sparq::upload_linear(ctx, sparq::int8_linear(w, ss), d);
  });
}

// cudaUploadSparse(sparse) -> Promise<DeviceWeight>
Napi::Value UploadSparse(const Napi::CallbackInfo& info) {
  auto w = GetSparse(info[0], "to('cuda')");
  CudaCtx hold = CudaContext(info.Env(), "to('cuda')");
  sparq::cuda::Context* ctx = hold.get();
  return Upload(info.Env(), [w, ctx, hold](std::unique_ptr<sparq::DeviceLinear>* d) { return sparq::upload_linear(ctx, sparq::sparse_linear(w), d); });
}

// cudaLinear(x, xOff, m, k, deviceWeight, bias|null, biasOff, out, outOff) -> Promise<void>
Napi::Value Linear(const Napi::CallbackInfo& info) {
  const char* op = "linear";
  const int64_t m = ArgInt(info, 2, op, "m", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  auto w = DeviceWeight::Get(info[4], op);
  if (w->k != k) throw Napi::RangeError::New(info.Env(), "linear: k mismatch");
  const Span x = ArgDevSpan(info, 0, op, "x", uint64_t(m) * uint64_t(k) * 4);
  const Span bias = ArgDevSpan(info, 5, op, "bias", uint64_t(w->n) * 4, true);
  const Span o = ArgDevSpan(info, 7, op, "out", uint64_t(m) * uint64_t(w->n) * 4);
  CudaCtx hold = CudaContext(info.Env(), op);
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [x, bias, o, w, m, ctx, hold]() {
    const size_t sb = w->scratch_bytes(m);
    void* scratch = nullptr;
    if (sb) {
      if (Error e = sparq::cuda::device_alloc(ctx, sb, &scratch); !e.ok()) return e;
    }
    Error e = sparq::run_linear(ctx, *w, x.ptr<float>(), m, bias.block ? bias.ptr<float>() : nullptr, scratch,
                                o.ptr<float>());
    if (scratch) sparq::cuda::device_free(ctx, scratch, sb);
    return e;
  });
}

// cudaMatmulS8(a, aOff, m, k, b, bOff, n, out, outOff) -> Promise<void>: exact int32
// a [m, k] . b [n, k]^T, rows copied into zero-padded [*, round_up(k, 64)] buffers.
Napi::Value MatmulS8(const Napi::CallbackInfo& info) {
  const char* op = "matmulInt8";
  const int64_t m = ArgInt(info, 2, op, "m", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  const int64_t n = ArgInt(info, 6, op, "n", 1, kMaxDim);
  const Span a = ArgDevSpan(info, 0, op, "a", uint64_t(m) * uint64_t(k));
  const Span b = ArgDevSpan(info, 4, op, "b", uint64_t(n) * uint64_t(k));
  const Span o = ArgDevSpan(info, 7, op, "out", uint64_t(m) * uint64_t(n) * 4);
  CudaCtx hold = CudaContext(info.Env(), op);
  sparq::cuda::Context* ctx = hold.get();
  return RunAsync(info.Env(), [a, b, o, m, k, n, ctx, hold]() {
    const int64_t kp = sparq::round_up(k, 64);
    sparq::cuda::DeviceBuffers tmp;
    void *pa = nullptr, *pb = nullptr;
    if (Error e = tmp.alloc(ctx, size_t(m * kp), &pa); !e.ok()) return e;
    if (Error e = tmp.alloc(ctx, size_t(n * kp), &pb); !e.ok()) return e;
    if (Error e = sparq::cuda::memset_zero(ctx, pa, size_t(m * kp)); !e.ok()) return e;
    if (Error e = sparq::cuda::memset_zero(ctx, pb, size_t(n * kp)); !e.ok()) return e;
    if (Error e = sparq::cuda::copy_2d(ctx, pa, size_t(kp), a.ptr<void>(), size_t(k), size_t(k), size_t(m)); !e.ok()) return e;
    if (Error e = sparq::cuda::copy_2d(ctx, pb, size_t(kp), b.ptr<void>(), size_t(k), size_t(k), size_t(n)); !e.ok()) return e;
    return sparq::cuda::matmul_s8(ctx, static_cast<int8_t*>(pa), m, static_cast<int8_t*>(pb), n, kp, o.ptr<int32_t>());
  });
}

// cudaMemInfo() -> { free, total, allocated } (bytes; throws when no device)
Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CudaCtx hold = CudaContext(env, "cudaMemInfo");
  sparq::cuda::Context* ctx = hold.get();
  size_t f = 0, t = 0;
  const Error e = sparq::cuda::mem_info(ctx, &f, &t);
  if (!e.ok()) throw Napi::Error::New(env, e.message);
  Napi::Object o = Napi::Object::New(env);
  o.Set("free", double(f));
  o.Set("total", double(t));
  o.Set("allocated", double(sparq::cuda::device_allocated_bytes()));
  return o;
}

// cudaBenchGemm(m, n, k, group, reps) -> Promise<ms per call>
Napi::Value BenchGemm(const Napi::CallbackInfo& info) {
  const char* op = "cudaBenchGemm";
  const int64_t m = ArgInt(info, 0, op, "m", 1, kMaxDim), n = ArgInt(info, 1, op, "n", 1, kMaxDim);
  const int64_t k = ArgInt(info, 2, op, "k", 1, kMaxDim), g = ArgInt(info, 3, op, "group", 0, 128);
  const int reps = int(ArgInt(info, 4, op, "reps", 1, 100000));
  const int dev = sparq::cuda::context_device(CudaContext(info.Env(), op).get());
  auto ms = std::make_shared<double>(0);
  return RunAsync(
      info.Env(), [=]() { return sparq::cuda::bench_gemm_s8(dev, m, n, k, g, reps, ms.get()); },
      [ms](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *ms); });
}

// cudaBenchAttention(b, hq, hkv, tq, tk, d, qType, kvType, causal, reps) -> Promise<ms per call>
// types: 0 f32, 1 f16, 2 bf16, 3 i8 (kv only)
Napi::Value BenchAttention(const Napi::CallbackInfo& info) {
  const char* op = "cudaBenchAttention";
  using sparq::cuda::DType;
  sparq::cuda::Attention a;
  a.b = ArgInt(info, 0, op, "b", 1, 4096);
  a.hq = ArgInt(info, 1, op, "hq", 1, 4096);
  a.hkv = ArgInt(info, 2, op, "hkv", 1, 4096);
  a.tq = ArgInt(info, 3, op, "tq", 1, kMaxDim);
  a.tk = ArgInt(info, 4, op, "tk", 1, kMaxDim);
  a.d = ArgInt(info, 5, op, "d", 1, 256);
  const DType types[] = {DType::f32, DType::f16, DType::bf16, DType::i8};
  a.q_type = types[ArgInt(info, 6, op, "q type", 0, 2)];
  a.kv_type = types[ArgInt(info, 7, op, "kv type", 0, 3)];
  a.causal = info.Length() > 8 && info[8].ToBoolean().Value();
  a.scale = 1.f / std::sqrt(float(a.d));
  const int reps = int(ArgInt(info, 9, op, "reps", 1, 100000));
  const int dev = sparq::cuda::context_device(CudaContext(info.Env(), op).get());
  auto ms = std::make_shared<double>(0);
  return RunAsync(
      info.Env(), [=]() { return sparq::cuda::bench_attention(dev, a, reps, ms.get()); },
      [ms](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *ms); });
}

}  // namespace

void RegisterCuda(Napi::Env env, Napi::Object exports) {
  DeviceWeight::Export(env, exports, "DeviceWeight");
  Export(env, exports, {
      {"cudaUploadPacked", UploadPacked},
      {"cudaUploadSparse", UploadSparse},
      {"cudaLinear", Linear},
      {"cudaMatmulS8", MatmulS8},
      {"cudaMemInfo", MemInfo},
      {"cudaBenchGemm", BenchGemm},
      {"cudaBenchAttention", BenchAttention},
  });
}

}  // namespace sparq_addon
