// ggml_ops.cpp - the GGUF block formats from JS: their table, widening to f32,
// quantizing rows into a type, and the block linear.
#include <cstring>

#include "../cpu/quants.h"
#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

// The block format of a ggml type id argument (throws a RangeError naming it otherwise).
const sparq::BlockFormat& ArgType(const Napi::CallbackInfo& info, size_t i, const char* op, bool quantized) {
  const int64_t type = ArgInt(info, i, op, "type", 0, 1 << 20);
  const sparq::BlockFormat* f = sparq::block_format(int(type));
  if (!f || (quantized && !f->quantized))
    throw Napi::RangeError::New(info.Env(), std::string(op) + ": GGUF type " + sparq::ggml_type_name(int(type)) + " is not one sparq " +
                                                (f ? "quantizes" : "reads"));
  return *f;
}

// widenToF32(storage, offset, type (ggml id: F16, BF16, Q4_0 .. Q6_K, IQ4_*), count) -> Promise<Storage> of count f32
Napi::Value Widen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "widenToF32";
  const sparq::BlockFormat& f = ArgType(info, 2, op, false);
  const int64_t count = ArgInt(info, 3, op, "count", 1, int64_t(1) << 40);
  if (count % f.block)
    throw Napi::RangeError::New(env, std::string(op) + ": " + f.name + " needs a multiple of " + std::to_string(f.block) + " values");
  const Span s = ArgSpan(info, 0, op, "src", uint64_t(count / f.block) * uint64_t(f.bytes));
  auto block = std::make_shared<Block>();
  const int type = int(f.type);
  return RunAsync(
      env,
      [s, type, count, block]() {
        block->p = sparq::aligned_malloc(size_t(count) * 4);
        if (!block->p) return Error::make(sparq::Status::out_of_memory, "widenToF32: out of memory");
        block->bytes = size_t(count) * 4;
        return sparq::ggml_to_f32(s.ptr<void>(), type, count, static_cast<float*>(block->p));
      },
      [block](Napi::Env e) -> Napi::Value { return Storage::Wrap(e, block); });
}

// ggmlTypes() -> [{ type, name, block, bytes, quantized, offsets }]: the block-format table
Napi::Value GgmlTypes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  const sparq::BlockFormat* f = sparq::block_formats(&n);
  Napi::Array a = Napi::Array::New(env, size_t(n));
  for (int i = 0; i < n; ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("type", int(f[i].type));
    o.Set("name", f[i].name);
    o.Set("block", f[i].block);
    o.Set("bytes", f[i].bytes);
    o.Set("quantized", f[i].quantized);
    o.Set("offsets", f[i].offsets);
    a.Set(uint32_t(i), o);
  }
  return a;
}

// ggmlQuantize(storage, offset, type, n, k, sync?) -> Promise<Storage> (sync: Storage) of n rows of `type` blocks
Napi::Value GgmlQuantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "ggmlQuantize";
  const sparq::BlockFormat& f = ArgType(info, 2, op, true);
  const int64_t n = ArgInt(info, 3, op, "n", 1, int64_t(1) << 30), k = ArgInt(info, 4, op, "k", 1, int64_t(1) << 24);
  if (k % f.block) throw Napi::RangeError::New(env, std::string(op) + ": " + f.name + " rows must be a multiple of " + std::to_string(f.block) + " values");
  const Span x = ArgSpan(info, 0, op, "x", uint64_t(n) * uint64_t(k) * 4);
  const int64_t bytes = n * (k / f.block) * f.bytes;
  auto block = std::make_shared<Block>();
  const int type = int(f.type);
  auto work = [x, type, n, k, bytes, block]() {
    block->p = sparq::aligned_malloc(size_t(bytes));
    if (!block->p) return Error::make(sparq::Status::out_of_memory, "ggmlQuantize: out of memory");
    block->bytes = size_t(bytes);
    return sparq::ggml_quantize(x.ptr<float>(), type, n, k, static_cast<uint8_t*>(block->p));
  };
  auto done = [block](Napi::Env e) -> Napi::Value { return Storage::Wrap(e, block); };
  return RunMaybeSync(env, info.Length() > 5 && info[5].ToBoolean().Value(), work, done);  // sync: small tensors (fixtures)
}

// linearBlocks(w, wOff, type, n, k, x, xOff, m, out, outOff) -> Promise<void>: out[m, n] = x[m, k] . W^T
Napi::Value LinearBlocks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "linearBlocks";
  const sparq::BlockFormat& f = ArgType(info, 2, op, true);
  const int64_t n = ArgInt(info, 3, op, "n", 1, int64_t(1) << 30), k = ArgInt(info, 4, op, "k", 1, int64_t(1) << 24);
  const int64_t m = ArgInt(info, 7, op, "m", 1, int64_t(1) << 30);
  if (k % f.block) throw Napi::RangeError::New(env, std::string(op) + ": " + f.name + " rows must be a multiple of " + std::to_string(f.block) + " values");
  const Span w = ArgSpan(info, 0, op, "w", uint64_t(n) * uint64_t(k / f.block) * uint64_t(f.bytes));
  const Span x = ArgSpan(info, 5, op, "x", uint64_t(m) * uint64_t(k) * 4);
  const Span y = ArgSpan(info, 8, op, "out", uint64_t(m) * uint64_t(n) * 4);
  const int type = int(f.type);
  return RunAsync(env, [w, x, y, type, n, k, m]() {
    sparq::BlockWeight bw;
    if (Error e = sparq::block_weight(type, n, k, w.ptr<void>(), &bw); !e.ok()) return e;
    return sparq::linear_blocks(bw, x.ptr<float>(), m, y.ptr<float>());
  });
}
}  // namespace

void RegisterGgml(Napi::Env env, Napi::Object exports) {
  Export(env, exports, {
      {"widenToF32", Widen},
      {"ggmlTypes", GgmlTypes},
      {"ggmlQuantize", GgmlQuantize},
      {"linearBlocks", LinearBlocks},
  });
}

}  // namespace sparq_addon
