// addon.h - shared pieces of the N-API adapter: native memory blocks held by
// JS objects, the Promise-returning worker, argument helpers. No math here.
#pragma once
#include <napi.h>

#include "../cpu/q4.h"
#include "../cpu/sparse.h"
#include "../model/linear_format.h"

#include <functional>
#include <memory>
#include <string>

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

// JS class `Storage`: owns one Block. dispose() or the finalizer frees it.
class Storage : public Napi::ObjectWrap<Storage> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Storage(const Napi::CallbackInfo& info);
  ~Storage() override;
  void Finalize(Napi::Env env) override { Release(env); }
  // The block, or a thrown JS error when disposed.
  static BlockPtr Get(const Napi::Value& v, const char* what);
  // A new JS Storage owning `block` (already allocated and filled).
  static Napi::Object Wrap(Napi::Env env, BlockPtr block);
  bool OnDevice() const { return block_ && block_->on_device(); }

 private:
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ByteLength(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  void Release(Napi::Env env);
  BlockPtr block_;
  int64_t reported_ = 0;
};

// JS class `Packed`: a prepacked int8 weight (sparq::PackedWeight).
class Packed : public Napi::ObjectWrap<Packed> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Packed(const Napi::CallbackInfo& info);
  ~Packed() override;
  void Finalize(Napi::Env env) override { Release(env); }
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<sparq::PackedWeight> w);
  static std::shared_ptr<sparq::PackedWeight> Get(const Napi::Value& v, const char* what);

 private:
  Napi::Value Unpack(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Meta(const Napi::CallbackInfo& info);
  void Release(Napi::Env env);
  std::shared_ptr<sparq::PackedWeight> w_;
  int64_t reported_ = 0;
};

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

// Runs `work` on the libuv pool and settles a Promise: resolved with
// done(env) (undefined when empty), rejected with the error message.
Napi::Value RunAsync(Napi::Env env, std::function<sparq::Error()> work,
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
// Whether argument i is a storage in device memory (false for anything else).
bool DeviceOf(const Napi::CallbackInfo& info, size_t i);
// Device memory only.
Span ArgDevSpan(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, uint64_t bytes,
                bool optional = false);
// This env's CUDA context (created on first use); throws a JS Error saying why
// when CUDA is not compiled in or no device is present.
CudaCtx CudaContext(Napi::Env env, const char* op);
// cuda_ops.cpp: device bindings
void RegisterCuda(Napi::Env env, Napi::Object exports, InstanceData* data);

void RegisterOps(Napi::Env env, Napi::Object exports);
// model_ops.cpp: readFile, the Model class
void RegisterModel(Napi::Env env, Napi::Object exports, InstanceData* data);
// sparse_ops.cpp: the Sparse class, spmm
void RegisterSparse(Napi::Env env, Napi::Object exports, InstanceData* data);
// The weight behind a JS Sparse (throws a TypeError naming `what` otherwise / when disposed).
std::shared_ptr<sparq::SparseWeight> GetSparse(const Napi::Value& v, const char* what);
// q4_ops.cpp: the Quant4 class (4-bit weights)
void RegisterQ4(Napi::Env env, Napi::Object exports, InstanceData* data);
std::shared_ptr<sparq::PackedQ4> GetQ4(const Napi::Value& v, const char* what);
// linear_ops.cpp: the Linear class (any format of the linear format table)
void RegisterLinear(Napi::Env env, Napi::Object exports, InstanceData* data);
// The weight behind a JS Linear, Packed, Quant4 or Sparse (an absent one for
// anything else; throws naming `what` when disposed).
sparq::LinearWeight AnyLinear(const Napi::Value& v, const char* what);

}  // namespace sparq_addon
