// addon.h - shared pieces of the N-API adapter: native memory blocks held by
// JS objects, the Promise-returning worker, argument helpers. No math here.
#pragma once
#include <napi.h>

#include "../cpu/q4.h"
#include "../cpu/sparse.h"
#include "../model/linear_format.h"

#include <functional>
#include <initializer_list>
#include <utility>
#include <memory>
#include <string>
#include <type_traits>

#include "sparq/cuda.h"
#include "sparq/sparq.h"

namespace sparq_addon {

// A CUDA context (device + stream) shared by the env that made it and every
// device block allocated on it: it is destroyed after the last of them.
using CudaCtx = std::shared_ptr<sparq::cuda::Context>;

// A file memory-mapped whole (private, copy-on-write: a write never reaches
// the file); model_ops.cpp. Returns an empty Error and sets *p / *bytes, or says why.
sparq::Error map_file(const std::string& path, void** p, size_t* bytes);
void unmap_file(void* p, size_t bytes);
// Bytes of files mapped now (info().mappedBytes).
int64_t mapped_bytes();

// A 64-byte aligned host allocation, device memory when `ctx` is set
// (allocated and freed stream-ordered on it; the block keeps the context
// alive), or a mapped file when `mapped`. Shared so that an async op keeps its
// inputs alive even if JS disposes the tensor while the op runs.
struct Block {
  void* p = nullptr;
  size_t bytes = 0;
  CudaCtx ctx;
  bool mapped = false;
  bool on_device() const { return ctx != nullptr; }
  ~Block() {
    if (ctx) sparq::cuda::device_free(ctx.get(), p, bytes ? bytes : 1);
    else if (mapped) unmap_file(p, bytes);
    else sparq::aligned_free(p);
  }
};
using BlockPtr = std::shared_ptr<Block>;

struct InstanceData {
  CudaCtx cuda;  // this env's device context (stream), made on first use
  Napi::FunctionReference device_weight_ctor;
  Napi::FunctionReference storage_ctor;
  Napi::FunctionReference packed_ctor;
  Napi::FunctionReference model_ctor;
  Napi::FunctionReference sparse_ctor;
  Napi::FunctionReference q4_ctor;
  Napi::FunctionReference linear_ctor;
};

// The base of every JS class that owns one native object P (a shared_ptr, or a
// value with present()): the bytes it reports to V8 as external memory (so the
// GC runs when native memory grows), dispose() and the finalizer releasing it,
// Wrap (a new JS object owning a P) and Get (the P behind a JS value, or a
// thrown error naming the op). Derived supplies Ctor (its constructor in the
// env's InstanceData) and the messages kExpected ("a sparse weight": what Get
// wants) and kDisposed ("sparse weight has been disposed").
template <class Derived, class P>
class NativeHandle : public Napi::ObjectWrap<Derived> {
 public:
  explicit NativeHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Derived>(info) {}
  void Finalize(Napi::Env env) override { Release(env); }

  // A new JS object owning p, reporting `bytes` of external memory. The
  // constructor gets one argument, IsWrap(): no JS arguments to parse.
  static Napi::Object Wrap(Napi::Env env, P p, int64_t bytes) {
    Napi::Object o = Derived::Ctor(*env.GetInstanceData<InstanceData>()).New({Napi::External<void>::New(env, WrapTag())});
    Derived::Unwrap(o)->Hold(env, std::move(p), bytes);
    return o;
  }
  // Defines the class in this env (its constructor kept in InstanceData) and exports it as `name`.
  static void Export(Napi::Env env, Napi::Object exports, const char* name) {
    Napi::Function c = Derived::Define(env);
    Derived::Ctor(*env.GetInstanceData<InstanceData>()) = Napi::Persistent(c);
    exports.Set(name, c);
  }
  // Whether a constructor call comes from Wrap.
  static bool IsWrap(const Napi::CallbackInfo& info) {
    return info.Length() == 1 && info[0].IsExternal() && info[0].As<Napi::External<void>>().Data() == WrapTag();
  }
  // The object behind v, or nullptr when v is not one of this class.
  static Derived* Find(const Napi::Value& v) {
    if (!v.IsObject()) return nullptr;
    Napi::Object o = v.As<Napi::Object>();
    if (!o.InstanceOf(Derived::Ctor(*v.Env().GetInstanceData<InstanceData>()).Value())) return nullptr;
    return Derived::Unwrap(o);
  }
  // What v owns; throws "what: expected <kExpected>" (TypeError) or "what: <kDisposed>".
  static const P& Get(const Napi::Value& v, const char* what) {
    Derived* d = Find(v);
    if (!d) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected " + Derived::kExpected);
    return d->Owned(what);
  }
  // What this object owns; throws "what: <kDisposed>" (just kDisposed without `what`).
  // A method that runs JS meanwhile (Object::Set can call a setter that disposes
  // this object) keeps a copy of it, not the reference.
  const P& Owned(const char* what = nullptr) const {
    if (!Present(p_)) throw Napi::Error::New(this->Env(), what ? std::string(what) + ": " + Derived::kDisposed : std::string(Derived::kDisposed));
    return p_;
  }
  bool Disposed() const { return !Present(p_); }

 protected:
  // Takes p (what was owned before is released first).
  void Hold(Napi::Env env, P p, int64_t bytes) {
    Release(env);
    p_ = std::move(p);
    reported_ = bytes;
    if (reported_) Napi::MemoryManagement::AdjustExternalMemory(env, reported_);
  }
  void Release(Napi::Env env) {
    if (!Present(p_)) return;
    p_ = P{};
    if (reported_) Napi::MemoryManagement::AdjustExternalMemory(env, -reported_);
    reported_ = 0;
  }
  // JS dispose(): frees now (a second call does nothing)
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release(info.Env());
    return info.Env().Undefined();
  }
  P p_{};

 private:
  static void* WrapTag() {
    static char tag;
    return &tag;
  }
  template <class T>
  static bool Present(const T& p) {
    if constexpr (std::is_same_v<T, sparq::LinearWeight>) return p.present();
    else return p != nullptr;
  }
  int64_t reported_ = 0;
};

// JS class `Storage`: owns one Block (host, device or a mapped file).
class Storage : public NativeHandle<Storage, BlockPtr> {
 public:
  static constexpr const char* kExpected = "a tensor storage";
  static constexpr const char* kDisposed = "tensor has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.storage_ctor; }
  static Napi::Function Define(Napi::Env env);
  // new Storage(byteLength, device?) from JS; empty from Wrap
  explicit Storage(const Napi::CallbackInfo& info);
  // A new JS Storage owning `block` (already allocated and filled).
  static Napi::Object Wrap(Napi::Env env, BlockPtr block) {
    const auto bytes = int64_t(block->bytes);
    return NativeHandle::Wrap(env, std::move(block), bytes);
  }
  bool OnDevice() const { return p_ && p_->on_device(); }

 private:
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value ByteLength(const Napi::CallbackInfo& info);
  Napi::Value IsDisposed(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
};

// JS class `Packed`: a prepacked int8 weight (sparq::PackedWeight).
class Packed : public NativeHandle<Packed, std::shared_ptr<sparq::PackedWeight>> {
 public:
  static constexpr const char* kExpected = "a quantized weight";
  static constexpr const char* kDisposed = "quantized weight has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.packed_ctor; }
  static Napi::Function Define(Napi::Env env);
  explicit Packed(const Napi::CallbackInfo& info) : NativeHandle(info) {}
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<sparq::PackedWeight> w) {
    const auto bytes = int64_t(w->bytes());
    return NativeHandle::Wrap(env, std::move(w), bytes);
  }

 private:
  Napi::Value Unpack(const Napi::CallbackInfo& info);
  Napi::Value Meta(const Napi::CallbackInfo& info);
};

// Exports functions by name: { {"linearQ4", LinearQ4}, ... }.
using Binding = Napi::Value (*)(const Napi::CallbackInfo&);
inline void Export(Napi::Env env, Napi::Object exports, std::initializer_list<std::pair<const char*, Binding>> fns) {
  for (const auto& [name, fn] : fns) exports.Set(name, Napi::Function::New(env, fn, name));
}

// Largest dimension accepted from JS. With dims <= 2^30 a byte count of two
// dims and an element size <= 4 stays under 2^62, so those span checks cannot
// overflow; a count of three dims or more goes through Bytes (checked).
constexpr int64_t kMaxDim = int64_t(1) << 30;
// Product of dims times an element size, or a RangeError when it overflows 2^62.
uint64_t Bytes(const Napi::Env& env, const char* op, std::initializer_list<int64_t> dims, int64_t es);

// Runs `work` on the libuv pool and settles a Promise: resolved with
// done(env) (undefined when empty), rejected with the error message.
Napi::Value RunAsync(Napi::Env env, std::function<sparq::Error()> work,
                     std::function<Napi::Value(Napi::Env)> done = nullptr);

// RunAsync, or on the JS thread when `sync` (cheap one-time preparation the API
// exposes synchronously, like quantize()): done(env) returned, or the error thrown.
Napi::Value RunMaybeSync(Napi::Env env, bool sync, std::function<sparq::Error()> work,
                         std::function<Napi::Value(Napi::Env)> done = nullptr);

// Argument helpers: throw a JS TypeError/RangeError naming the op and argument.
int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t lo, int64_t hi);
double ArgNum(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
// A (block, byte offset) pair checked to hold `bytes` bytes.
struct Span {
  BlockPtr block;
  size_t offset = 0;
  template <class T>
  T* ptr() const { return reinterpret_cast<T*>(static_cast<char*>(block->p) + offset); }
};
// Host memory only: a device storage is refused with a message naming the op.
Span ArgSpan(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes,
             bool optional = false);
// Host or device memory, as `device` says (ops that run on either).
Span ArgSpanOn(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes, bool device,
               bool optional = false);
// Named arguments: a binding's one options object ({ b, hq, q, qOff, ... }), read
// with the checks and messages of the positional helpers, naming the field. A
// storage field `x` takes its byte offset from `xOff` (0 when absent).
class Opts {
 public:
  // argument i must be an object
  Opts(const Napi::CallbackInfo& info, size_t i, const char* op);
  int64_t Int(const char* key, int64_t lo, int64_t hi) const;
  double Num(const char* key) const;
  // absent: false
  bool Bool(const char* key) const;
  // present and neither null nor undefined
  bool Has(const char* key) const;
  // host memory, or device memory when `device`; an optional one absent: an empty Span
  Span SpanOn(const char* key, uint64_t bytes, bool device, bool optional = false) const;
  // whether the field is a storage in device memory
  bool Device(const char* key) const;

 private:
  Napi::Object o_;
  const char* op_;
};
// Whether argument i is a storage in device memory (false for anything else).
bool DeviceOf(const Napi::CallbackInfo& info, size_t i);
// Device memory only.
Span ArgDevSpan(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes,
                bool optional = false);
// This env's CUDA context (created on first use); throws a JS Error saying why
// when CUDA is not compiled in or no device is present.
CudaCtx CudaContext(Napi::Env env, const char* op);
// int8_ops.cpp: the Packed class's methods, int8 quantization and products
void RegisterInt8(Napi::Env env, Napi::Object exports);
// attention_ops.cpp: attention and the KV store
void RegisterAttention(Napi::Env env, Napi::Object exports);
// cuda_ops.cpp: device bindings
void RegisterCuda(Napi::Env env, Napi::Object exports);

// tensor_ops.cpp: f32 products, small ops, statistics, the machine's ceilings
void RegisterOps(Napi::Env env, Napi::Object exports);
// file_ops.cpp: mapFile, readFile, quantizeFile, packQ8File
void RegisterFiles(Napi::Env env, Napi::Object exports);
// ggml_ops.cpp: the GGUF block formats' table, widening, quantizing, the block linear
void RegisterGgml(Napi::Env env, Napi::Object exports);
// model_ops.cpp: the Model class, createModel
void RegisterModel(Napi::Env env, Napi::Object exports);
// sparse_ops.cpp: the Sparse class, spmm
void RegisterSparse(Napi::Env env, Napi::Object exports);
// The weight behind a JS Sparse (throws a TypeError naming `what` otherwise / when disposed).
std::shared_ptr<sparq::SparseWeight> GetSparse(const Napi::Value& v, const char* what);
// q4_ops.cpp: the Quant4 class (4-bit weights)
void RegisterQ4(Napi::Env env, Napi::Object exports);
std::shared_ptr<sparq::PackedQ4> GetQ4(const Napi::Value& v, const char* what);
// linear_ops.cpp: the Linear class (any format of the linear format table)
void RegisterLinear(Napi::Env env, Napi::Object exports);
// The weight behind a JS Linear, Packed, Quant4 or Sparse (an absent one for
// anything else; throws naming `what` when disposed).
sparq::LinearWeight AnyLinear(const Napi::Value& v, const char* what);

}  // namespace sparq_addon
