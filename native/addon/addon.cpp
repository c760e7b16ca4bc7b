// addon.cpp - module entry: registers the classes and functions, converts
// runtime information to JS. Context-aware (one InstanceData per env), so it
// loads in worker_threads too.
#include "addon.h"

#include <malloc.h>
#include "sparq/profile.h"

#include <cmath>
#include <cstring>

namespace sparq_addon {

// --- Storage -----------------------------------------------------------------------
Napi::Function Storage::Define(Napi::Env env) {
  return DefineClass(env, "Storage",
                     {InstanceMethod("write", &Storage::Write), InstanceMethod("read", &Storage::Read),
                      InstanceMethod("dispose", &Storage::Dispose),
                      InstanceAccessor("byteLength", &Storage::ByteLength, nullptr),
                      InstanceAccessor("device", &Storage::Device, nullptr),
                      InstanceAccessor("disposed", &Storage::IsDisposed, nullptr)});
}

// new Storage(byteLength, device?): device 'cuda' allocates device memory.
Storage::Storage(const Napi::CallbackInfo& info) : NativeHandle(info) {
  if (IsWrap(info)) return;
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "Storage: byteLength must be a number").ThrowAsJavaScriptException();
    return;
  }
  const double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n > double(int64_t(1) << 46) || n != std::floor(n)) {
    Napi::RangeError::New(env, "Storage: byteLength must be an integer in [0, 2^46], got " + std::to_string(n))
        .ThrowAsJavaScriptException();
    return;
  }
  const bool cuda = info.Length() > 1 && info[1].IsString() && info[1].As<Napi::String>().Utf8Value() == "cuda";
  auto b = std::make_shared<Block>();
  b->bytes = size_t(n);
  if (cuda) {
    CudaCtx hold;
    try {
      hold = CudaContext(env, "Storage");
    } catch (const Napi::Error& e) {
      e.ThrowAsJavaScriptException();
      return;
    }
    sparq::cuda::Context* ctx = hold.get();
    void* p = nullptr;
    // stream-ordered: neither waits for work other ops have queued
    sparq::Error e = sparq::cuda::device_alloc(ctx, b->bytes ? b->bytes : 1, &p);
    if (e.ok()) e = sparq::cuda::memset_zero(ctx, p, b->bytes);
    if (!e.ok()) {
      if (p) sparq::cuda::device_free(ctx, p, b->bytes ? b->bytes : 1);
      Napi::RangeError::New(env, "Storage: " + e.message).ThrowAsJavaScriptException();
      return;
    }
    b->p = p;
    b->ctx = std::move(hold);
  } else {
    b->p = sparq::aligned_malloc(b->bytes ? b->bytes : 1);
    if (!b->p) {
      Napi::RangeError::New(env, "Storage: out of memory allocating " + std::to_string(size_t(n)) + " bytes")
          .ThrowAsJavaScriptException();
      return;
    }
    std::memset(b->p, 0, b->bytes);
  }
  const auto bytes = int64_t(b->bytes);
  Hold(env, std::move(b), bytes);
}

// write(typedArray, byteOffset)
Napi::Value Storage::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BlockPtr keep = Owned("write");
  const Block& b = *keep;
  if (info.Length() < 2 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "write: expected (TypedArray, byteOffset)");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const int64_t off = ArgInt(info, 1, "write", "byteOffset", 0, int64_t(b.bytes));
  const size_t len = ta.ByteLength();
  if (uint64_t(off) + len > b.bytes) throw Napi::RangeError::New(env, "write: data exceeds the tensor's storage");
  Napi::ArrayBuffer ab = ta.ArrayBuffer();
  const char* src = static_cast<char*>(ab.Data()) + ta.ByteOffset();
  if (b.on_device()) {
    const sparq::Error e = sparq::cuda::copy_h2d(b.ctx.get(), static_cast<char*>(b.p) + off, src, len);
    if (!e.ok()) throw Napi::Error::New(env, "write: " + e.message);
  } else {
    std::memcpy(static_cast<char*>(b.p) + off, src, len);
  }
  return env.Undefined();
}

// read(byteOffset, byteLength) -> ArrayBuffer (a copy owned by JS)
Napi::Value Storage::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BlockPtr keep = Owned("read");
  const Block& b = *keep;
  const int64_t off = ArgInt(info, 0, "read", "byteOffset", 0, int64_t(b.bytes));
  const int64_t len = ArgInt(info, 1, "read", "byteLength", 0, int64_t(b.bytes) - off);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, size_t(len));
  if (b.on_device()) {
    const sparq::Error e = sparq::cuda::copy_d2h(b.ctx.get(), ab.Data(), static_cast<char*>(b.p) + off, size_t(len));
    if (!e.ok()) throw Napi::Error::New(env, "read: " + e.message);
  } else {
    std::memcpy(ab.Data(), static_cast<char*>(b.p) + off, size_t(len));
  }
  return ab;
}

Napi::Value Storage::ByteLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), p_ ? double(p_->bytes) : 0);
}
Napi::Value Storage::IsDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), Disposed()); }
Napi::Value Storage::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), OnDevice() ? "cuda" : "cpu");
}

// --- helpers ------------------------------------------------------------------
namespace {

int64_t IntOf(Napi::Env env, const Napi::Value& v, const char* op, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(op) + ": " + name + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= double(lo) && d <= double(hi)) || d != std::floor(d))
    throw Napi::RangeError::New(env, std::string(op) + ": " + name + " must be an integer in [" + std::to_string(lo) +
                                         ", " + std::to_string(hi) + "], got " + std::to_string(d));
  return int64_t(d);
}

double NumOf(Napi::Env env, const Napi::Value& v, const char* op, const std::string& name) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(op) + ": " + name + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// storage at a byte offset holding `bytes` (want_device: 0 host, 1 device, -1 either)
Span SpanOf(Napi::Env env, const Napi::Value& storage, const Napi::Value& offset, const char* op, const std::string& name,
            uint64_t bytes, bool optional, int want_device) {
  Span s;
  if (optional && (storage.IsNull() || storage.IsUndefined())) return s;
  s.block = Storage::Get(storage, (std::string(op) + ": " + name).c_str());
  const bool on_device = s.block->on_device();
  if (want_device == 0 && on_device)
    throw Napi::TypeError::New(env, std::string(op) + ": " + name + " is on cuda, but this op runs on the CPU; move it with .to('cpu')");
  if (want_device == 1 && !on_device) throw Napi::TypeError::New(env, std::string(op) + ": " + name + " is on the CPU; this op needs cuda memory");
  const int64_t off = IntOf(env, offset, op, name + " offset", 0, int64_t(s.block->bytes));
  if (uint64_t(off) + bytes > s.block->bytes)
    throw Napi::RangeError::New(env, std::string(op) + ": " + name + " needs " + std::to_string(bytes) + " bytes at offset " +
                                         std::to_string(off) + ", storage has " + std::to_string(s.block->bytes));
  s.offset = size_t(off);
  return s;
}

Napi::Value At(const Napi::CallbackInfo& info, size_t i) { return info.Length() > i ? info[i] : info.Env().Undefined(); }

Span ArgAnySpan(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes, bool optional,
                int want_device) {
  return SpanOf(info.Env(), At(info, i), At(info, i + 1), op, name, bytes, optional, want_device);
}

}  // namespace

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t lo, int64_t hi) {
  return IntOf(info.Env(), At(info, i), op, name, lo, hi);
}

double ArgNum(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return NumOf(info.Env(), At(info, i), op, name);
}

Opts::Opts(const Napi::CallbackInfo& info, size_t i, const char* op) : op_(op) {
  if (!At(info, i).IsObject()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": expected an options object");
  o_ = info[i].As<Napi::Object>();
}

int64_t Opts::Int(const char* key, int64_t lo, int64_t hi) const { return IntOf(o_.Env(), o_.Get(key), op_, key, lo, hi); }
double Opts::Num(const char* key) const { return NumOf(o_.Env(), o_.Get(key), op_, key); }
bool Opts::Bool(const char* key) const { return o_.Get(key).ToBoolean().Value(); }
bool Opts::Has(const char* key) const {
  const Napi::Value v = o_.Get(key);
  return !v.IsNull() && !v.IsUndefined();
}
Span Opts::SpanOn(const char* key, uint64_t bytes, bool device, bool optional) const {
  const std::string off = std::string(key) + "Off";
  Napi::Value at = o_.Get(off);
  if (at.IsUndefined()) at = Napi::Number::New(o_.Env(), 0);
  return SpanOf(o_.Env(), o_.Get(key), at, op_, key, bytes, optional, device ? 1 : 0);
}
bool Opts::Device(const char* key) const {
  const Storage* s = Storage::Find(o_.Get(key));
  return s && s->OnDevice();
}

Span ArgSpan(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes, bool optional) {
  return ArgAnySpan(info, i, op, name, bytes, optional, 0);
}

Span ArgSpanOn(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes, bool device,
               bool optional) {
  return ArgAnySpan(info, i, op, name, bytes, optional, device ? 1 : 0);
}

bool DeviceOf(const Napi::CallbackInfo& info, size_t i) {
  const Storage* s = info.Length() > i ? Storage::Find(info[i]) : nullptr;
  return s && s->OnDevice();
}

Span ArgDevSpan(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes,
                bool optional) {
  return ArgAnySpan(info, i, op, name, bytes, optional, 1);
}

CudaCtx CudaContext(Napi::Env env, const char* op) {
  auto* data = env.GetInstanceData<InstanceData>();
  if (!data->cuda) {
    sparq::cuda::Context* c = nullptr;
    const sparq::Error e = sparq::cuda::context_create(0, &c);
    if (!e.ok()) throw Napi::Error::New(env, std::string(op) + ": no CUDA device available (" + e.message + ")");
    data->cuda = CudaCtx(c, sparq::cuda::context_destroy);
  }
  return data->cuda;
}

namespace {

class Task : public Napi::AsyncWorker {
 public:
  Task(Napi::Env env, std::function<sparq::Error()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, "sparq"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        done_(std::move(done)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      const sparq::Error e = work_();
      if (!e.ok()) SetError(e.message);
    } catch (const std::bad_alloc&) {
      SetError("out of memory");
    } catch (const std::exception& e) {
      SetError(std::string("internal error: ") + e.what());
    } catch (...) {
      SetError("internal error");
    }
  }
  // Settling the promise fails when the env is being torn down (a worker_thread
  // terminated while this op ran): nothing is left to tell, and an exception
  // escaping a libuv callback would abort the process, so it is dropped.
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_ ? done_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      Settle(e);
    } catch (const std::exception& e) {
      try {
        Settle(Napi::Error::New(env, std::string("internal error: ") + e.what()));
      } catch (...) {
      }
    }
  }
  void OnError(const Napi::Error& e) override { Settle(e); }

 private:
  void Settle(const Napi::Error& e) {
    try {
      deferred_.Reject(e.Value());
    } catch (...) {
    }
  }

  Napi::Promise::Deferred deferred_;
  std::function<sparq::Error()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
};

Napi::Array Strings(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a.Set(uint32_t(i), v[i]);
  return a;
}

// Bytes in use in the C heap (glibc's mallinfo2: small blocks plus mmapped ones), for
// leak checks that RSS cannot make (glibc's per-thread heaps are trimmed and grown
// as it sees fit, moving RSS by tens of MiB); -1 where unknown.
int64_t MallocBytes() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 m = mallinfo2();
  return int64_t(m.uordblks + m.hblkhd);
#else
  return -1;
#endif
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const sparq::RuntimeInfo r = sparq::runtime_info();
  const sparq::CudaInfo c = sparq::cuda_info();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("vendor", r.vendor);
  cpu.Set("brand", r.brand);
  cpu.Set("features", Strings(env, r.features));
  cpu.Set("physicalCores", r.physical_cores);
  cpu.Set("supportedIsas", Strings(env, r.supported_isas));
  cpu.Set("emulatedIsas", Strings(env, r.emulated_isas));
  o.Set("cpu", cpu);
  Napi::Object k = Napi::Object::New(env);
  k.Set("gemm_s8", r.isa);
  k.Set("sgemm", r.sgemm);
  k.Set("quantize_rows", r.quant);
  k.Set("attention", r.attention);
  k.Set("sparse", r.sparse);
  o.Set("kernels", k);
  o.Set("threads", r.threads);
  o.Set("dispatchError", r.dispatch_error);
  Napi::Object cu = Napi::Object::New(env);
  cu.Set("compiled", c.compiled);
  cu.Set("devices", c.devices);
  cu.Set("archs", c.archs);
  cu.Set("runtimeVersion", c.runtime_version);
  cu.Set("driverVersion", c.driver_version);
  if (!c.error.empty()) cu.Set("error", c.error);
  Napi::Array devs = Napi::Array::New(env, c.device_list.size());
  for (size_t i = 0; i < c.device_list.size(); ++i) {
    const sparq::CudaDevice& d = c.device_list[i];
    Napi::Object od = Napi::Object::New(env);
    od.Set("name", d.name);
    od.Set("major", d.major);
    od.Set("minor", d.minor);
    od.Set("sms", d.sms);
    od.Set("memoryBytes", d.memory_bytes);
    od.Set("clockMHz", d.clock_mhz);
    od.Set("bandwidthGBs", d.bandwidth_gbs);
    devs.Set(uint32_t(i), od);
  }
  cu.Set("deviceList", devs);
  o.Set("cuda", cu);
  o.Set("allocatedBytes", double(sparq::allocated_bytes()));
  o.Set("mappedBytes", double(mapped_bytes()));
  o.Set("mallocBytes", double(MallocBytes()));
  const sparq::ArenaStats a = sparq::arena_stats();
  Napi::Object ar = Napi::Object::New(env);
  ar.Set("on", a.on);
  ar.Set("capBytes", double(a.cap));
  ar.Set("cachedBytes", double(a.cached));
  ar.Set("hits", double(a.hits));
  ar.Set("misses", double(a.misses));
  o.Set("arena", ar);
  return o;
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "setIsa: name must be a string");
  const sparq::Error e = sparq::set_isa(info[0].As<Napi::String>().Utf8Value());
  if (!e.ok()) throw Napi::RangeError::New(env, "setIsa: " + e.message);
  return env.Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  sparq::set_threads(int(ArgInt(info, 0, "setNumThreads", "n", 1, 1024)));
  return info.Env().Undefined();
}

// profile(enable: boolean | undefined, reset: boolean) -> { [class]: { ns, calls } }:
// switches the forward pass's per-op-class timers (sparq/profile.h) and reads them.
Napi::Value Profile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && info[0].IsBoolean()) sparq::prof::enable(info[0].As<Napi::Boolean>().Value());
  const bool reset = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  int64_t ns[sparq::prof::kOps], calls[sparq::prof::kOps];
  sparq::prof::read(ns, calls, reset);
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < sparq::prof::kOps; ++i) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("ns", double(ns[i]));
    e.Set("calls", double(calls[i]));
    o.Set(sparq::prof::op_name(i), e);
  }
  return o;
}

Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
  sparq::arena_trim();
  return info.Env().Undefined();
}

Napi::Value AllocatedBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(sparq::allocated_bytes()));
}

}  // namespace

uint64_t Bytes(const Napi::Env& env, const char* op, std::initializer_list<int64_t> dims, int64_t es) {
  uint64_t n = uint64_t(es);
  for (int64_t d : dims)
    if (__builtin_mul_overflow(n, uint64_t(d), &n) || n > (uint64_t(1) << 62))
      throw Napi::RangeError::New(env, std::string(op) + ": sizes too large");
  return n;
}

Napi::Value RunMaybeSync(Napi::Env env, bool sync, std::function<sparq::Error()> work, std::function<Napi::Value(Napi::Env)> done) {
  if (!sync) return RunAsync(env, std::move(work), std::move(done));
  sparq::Error e;
  try {
    e = work();
  } catch (const std::bad_alloc&) {
    e = sparq::Error::make(sparq::Status::out_of_memory, "out of memory");
  }
  if (!e.ok()) throw Napi::Error::New(env, e.message);
  return done ? done(env) : env.Undefined();
}

Napi::Value RunAsync(Napi::Env env, std::function<sparq::Error()> work, std::function<Napi::Value(Napi::Env)> done) {
  auto* t = new Task(env, std::move(work), std::move(done));  // owned and deleted by libuv after OnOK/OnError
  Napi::Promise p = t->Promise();
  t->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<InstanceData>(new InstanceData());
  Storage::Export(env, exports, "Storage");
  Packed::Export(env, exports, "Packed");
  Export(env, exports, {
      {"info", Info},
      {"setIsa", SetIsa},
      {"setNumThreads", SetThreads},
      {"allocatedBytes", AllocatedBytes},
      {"trimMemory", TrimMemory},
      {"profile", Profile},
  });
  RegisterOps(env, exports);
  RegisterInt8(env, exports);
  RegisterAttention(env, exports);
  RegisterFiles(env, exports);
  RegisterGgml(env, exports);
  RegisterModel(env, exports);
  RegisterSparse(env, exports);
  RegisterQ4(env, exports);
  RegisterLinear(env, exports);
  RegisterCuda(env, exports);
  return exports;
}

}  // namespace sparq_addon

static Napi::Object InitSparq(Napi::Env env, Napi::Object exports) { return sparq_addon::Init(env, exports); }

NODE_API_MODULE(sparq, InitSparq)
