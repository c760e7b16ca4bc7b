// model_ops.cpp - the JS `Model` class around sparq::LlamaModel, and
// `createModel`. The TS loaders parse the file formats and pass weight
// locations (storage + byte offset, or packed int8 weights); the whole forward
// pass then runs here, one Promise per call.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "../model/llama.h"
#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

struct Held {
  std::mutex mu;  // one forward at a time per model
  std::unique_ptr<sparq::LlamaModel> model;
  std::vector<BlockPtr> keep;                        // file blocks the f32 weights point into
  std::vector<std::shared_ptr<const void>> owned;     // the linears' format data (counted in bytes)
  int64_t bytes = 0;
};

class Model : public NativeHandle<Model, std::shared_ptr<Held>> {
 public:
  static constexpr const char* kExpected = "a model";
  static constexpr const char* kDisposed = "model has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.model_ctor; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {InstanceMethod("forward", &Model::Forward), InstanceMethod("forwardBatch", &Model::ForwardBatch),
                        InstanceMethod("pos", &Model::Pos),
                        InstanceMethod("truncate", &Model::Truncate), InstanceMethod("dispose", &Model::Dispose),
                        InstanceMethod("meta", &Model::Meta), InstanceMethod("calibrate", &Model::Calibrate),
                        InstanceMethod("save", &Model::Save), InstanceMethod("toCuda", &Model::ToCuda),
                        InstanceMethod("deviceBytes", &Model::DeviceBytes)});
  }
  explicit Model(const Napi::CallbackInfo& info) : NativeHandle(info) {}
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<Held> h) {
    const int64_t bytes = h->bytes;
    return NativeHandle::Wrap(env, std::move(h), bytes);
  }

 private:
  std::shared_ptr<Held> get(Napi::Env) const { return Owned(); }
  // forward(Int32Array tokens, all, out?) -> Promise<Float32Array> logits (last position, or all)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = get(env);
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env, "forward: tokens must be an Int32Array");
    Napi::Int32Array ta = info[0].As<Napi::Int32Array>();
    auto tokens = std::make_shared<std::vector<int32_t>>(ta.Data(), ta.Data() + ta.ElementLength());
    const bool all = info.Length() > 1 && info[1].ToBoolean().Value();
    // out (optional): a Float32Array of exactly the logits' length, filled and
    // returned instead of a new array (a decode loop reuses one: no garbage per token)
    std::shared_ptr<Napi::ObjectReference> out;
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw Napi::TypeError::New(env, "forward: out must be a Float32Array");
      const size_t want = size_t((all ? int64_t(tokens->size()) : 1) * h->model->config().vocab);
      const size_t have = info[2].As<Napi::Float32Array>().ElementLength();
      if (have != want)
        throw Napi::RangeError::New(env, "forward: out holds " + std::to_string(have) + " floats; the logits are " + std::to_string(want));
      out = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info[2].As<Napi::Object>()));
    }
    auto logits = std::make_shared<std::vector<float>>();
    return RunAsync(
        env,
        [h, tokens, all, logits]() {
          std::lock_guard<std::mutex> lock(h->mu);
          const int64_t n = int64_t(tokens->size());
          logits->resize(size_t((all ? n : 1) * h->model->config().vocab));
          return h->model->forward(tokens->data(), n, all, logits->data());
        },
        [logits, out](Napi::Env e) -> Napi::Value {
          if (out) {  // still the same length (not detached meanwhile)
            Napi::Float32Array o = out->Value().As<Napi::Float32Array>();
            if (o.ElementLength() == logits->size()) {
              std::memcpy(o.Data(), logits->data(), logits->size() * 4);
              return o;
            }
          }
          Napi::Float32Array fresh = Napi::Float32Array::New(e, logits->size());
          std::memcpy(fresh.Data(), logits->data(), logits->size() * 4);
          return fresh;
        });
  }
  // forwardBatch(Int32Array tokens, Int32Array lengths, Int32Array slots, Float32Array out) ->
  // Promise<Float32Array>: one forward pass over lengths.length sequences (tokens packed one
  // after another), sequence i into KV slot slots[i]; out [count * vocab] gets each one's
  // last logits (LlamaModel::forward_batch checks slots, lengths and ids).
  Napi::Value ForwardBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = get(env);
    auto i32 = [&](size_t i) { return info.Length() > i && info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array; };
    if (!i32(0) || !i32(1) || !i32(2) || info.Length() < 4 || !info[3].IsTypedArray() ||
        info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(env, "forwardBatch: expected (Int32Array tokens, Int32Array lengths, Int32Array slots, Float32Array out)");
    Napi::Int32Array ta = info[0].As<Napi::Int32Array>(), la = info[1].As<Napi::Int32Array>(), sa = info[2].As<Napi::Int32Array>();
    const size_t count = la.ElementLength();
    if (count < 1 || sa.ElementLength() != count) throw Napi::RangeError::New(env, "forwardBatch: lengths and slots must have the same length, at least 1");
    auto tokens = std::make_shared<std::vector<int32_t>>(ta.Data(), ta.Data() + ta.ElementLength());
    auto lengths = std::make_shared<std::vector<int64_t>>(la.Data(), la.Data() + count);
    auto slots = std::make_shared<std::vector<int32_t>>(sa.Data(), sa.Data() + count);
    int64_t total = 0;
    for (int64_t l : *lengths) {
      if (l < 1) throw Napi::RangeError::New(env, "forwardBatch: every sequence needs at least one token");
      total += l;
    }
    if (total != int64_t(tokens->size())) throw Napi::RangeError::New(env, "forwardBatch: lengths must add up to the token count");
    const size_t want = count * size_t(h->model->config().vocab);
    if (info[3].As<Napi::Float32Array>().ElementLength() != want)
      throw Napi::RangeError::New(env, "forwardBatch: out holds " + std::to_string(info[3].As<Napi::Float32Array>().ElementLength()) +
                                           " floats; the logits are " + std::to_string(want));
    auto out = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info[3].As<Napi::Object>()));
    auto logits = std::make_shared<std::vector<float>>(want);
    return RunAsync(
        env,
        [h, tokens, lengths, slots, logits]() {
          std::lock_guard<std::mutex> lock(h->mu);
          return h->model->forward_batch(tokens->data(), lengths->data(), slots->data(), int64_t(slots->size()), logits->data());
        },
        [logits, out](Napi::Env e) -> Napi::Value {
          Napi::Float32Array o = out->Value().As<Napi::Float32Array>();
          if (o.ElementLength() != logits->size()) o = Napi::Float32Array::New(e, logits->size());  // detached meanwhile
          std::memcpy(o.Data(), logits->data(), logits->size() * 4);
          return o;
        });
  }
  // toCuda() -> Promise<void>: uploads the weights and runs every later forward on the
  // GPU (an empty cache there). Throws at once when no device is present.
  Napi::Value ToCuda(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = get(env);
    CudaCtx hold = CudaContext(env, "toDevice('cuda')");
  sparq::cuda::Context* ctx = hold.get();
    return RunAsync(env, [h, ctx, hold]() {
      std::lock_guard<std::mutex> lock(h->mu);
      return h->model->to_cuda(ctx);
    });
  }
  Napi::Value DeviceBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(get(info.Env())->model->device_bytes()));
  }
  // Never waits for a forward in flight (the JS thread must not block).
  // pos(slot = 0), truncate(n, slot = 0): a KV slot's position
  Napi::Value Pos(const Napi::CallbackInfo& info) {
    auto h = get(info.Env());
    const int64_t slot = info.Length() > 0 && !info[0].IsUndefined() ? ArgInt(info, 0, "pos", "slot", 0, h->model->config().max_sequences - 1) : 0;
    return Napi::Number::New(info.Env(), double(h->model->pos(slot)));
  }
  Napi::Value Truncate(const Napi::CallbackInfo& info) {
    auto h = get(info.Env());
    const int64_t n = ArgInt(info, 0, "truncate", "length", 0, int64_t(1) << 40);
    const int64_t slot = info.Length() > 1 && !info[1].IsUndefined() ? ArgInt(info, 1, "truncate", "slot", 0, h->model->config().max_sequences - 1) : 0;
    std::lock_guard<std::mutex> lock(h->mu);
    h->model->truncate(n, slot);
    return info.Env().Undefined();
  }
  // calibrate(Int32Array tokens, Int32Array lengths, Float32Array | null ranges, bins) -> Promise<{ norms,
  // amax, lo, hi, hist? }>: runs each sequence (lengths[i] tokens, one after another in `tokens`)
  // from an empty context and records the linears' inputs (LlamaCalibration): per feature the L2
  // norm (Float64Array) and max |x| (Float32Array); per (layer, input) min and max, and with
  // ranges ([layers * 4 * 2] lo, hi) a histogram of `bins` counts each. The context is empty afterwards.
  Napi::Value Calibrate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = get(env);
    if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env, "calibrate: expected (Int32Array tokens, Int32Array lengths)");
    Napi::Int32Array ta = info[0].As<Napi::Int32Array>(), la = info[1].As<Napi::Int32Array>();
    auto tokens = std::make_shared<std::vector<int32_t>>(ta.Data(), ta.Data() + ta.ElementLength());
    auto lengths = std::make_shared<std::vector<int32_t>>(la.Data(), la.Data() + la.ElementLength());
    int64_t total = 0;
    for (int32_t l : *lengths) {
      if (l < 1) throw Napi::RangeError::New(env, "calibrate: every sequence needs at least one token");
      total += l;
    }
    if (total != int64_t(tokens->size())) throw Napi::RangeError::New(env, "calibrate: lengths must add up to the token count");
    const int64_t layers = h->model->config().layers;
    auto ranges = std::make_shared<std::vector<float>>();
    int64_t bins = 0;
    if (info.Length() > 2 && info[2].IsTypedArray()) {
      Napi::TypedArray r = info[2].As<Napi::TypedArray>();
      if (r.TypedArrayType() != napi_float32_array || int64_t(r.ElementLength()) != layers * 8)
        throw Napi::TypeError::New(env, "calibrate: ranges must be a Float32Array of layers * 8 entries");
      Napi::Float32Array rf = info[2].As<Napi::Float32Array>();
      ranges->assign(rf.Data(), rf.Data() + rf.ElementLength());
      for (int64_t i = 0; i < layers * 4; ++i)
        if (!std::isfinite((*ranges)[size_t(2 * i)]) || !std::isfinite((*ranges)[size_t(2 * i + 1)]) || (*ranges)[size_t(2 * i)] > (*ranges)[size_t(2 * i + 1)])
          throw Napi::RangeError::New(env, "calibrate: every range must be finite with lo <= hi");
      bins = ArgInt(info, 3, "calibrate", "bins", 16, int64_t(1) << 20);
    }
    const int64_t gram_layer = info.Length() > 4 && info[4].IsNumber() ? ArgInt(info, 4, "calibrate", "gramLayer", -1, layers - 1) : -1;
    auto out = std::make_shared<sparq::LlamaCalibrationResult>();
    return RunAsync(
        env,
        [h, tokens, lengths, out, ranges, bins, gram_layer]() {
          std::lock_guard<std::mutex> lock(h->mu);
          return h->model->calibrate(tokens->data(), lengths->data(), int64_t(lengths->size()), ranges->empty() ? nullptr : ranges->data(),
                                     bins, gram_layer, out.get());
        },
        [out](Napi::Env e) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          Napi::Float64Array norms = Napi::Float64Array::New(e, out->sumsq.size());
          for (size_t i = 0; i < out->sumsq.size(); ++i) norms[i] = std::sqrt(out->sumsq[i]);
          o.Set("norms", norms);
          auto f32 = [&](const std::vector<float>& v) {
            Napi::Float32Array a = Napi::Float32Array::New(e, v.size());
            std::memcpy(a.Data(), v.data(), v.size() * 4);
            return a;
          };
          o.Set("amax", f32(out->amax));
          o.Set("lo", f32(out->lo));
          o.Set("hi", f32(out->hi));
          if (!out->gram.empty()) {
            Napi::Float64Array g = Napi::Float64Array::New(e, out->gram.size());
            std::memcpy(g.Data(), out->gram.data(), out->gram.size() * 8);
            o.Set("gram", g);
          }
          if (!out->hist.empty()) {
            Napi::Float64Array hist = Napi::Float64Array::New(e, out->hist.size());
            std::memcpy(hist.Data(), out->hist.data(), out->hist.size() * 8);
            o.Set("hist", hist);
          }
          return o;
        });
  }
  // save(path, metadataJson) -> Promise: the weights as held, to one safetensors file
  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = get(env);
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "save: expected (path, metadata)");
    const std::string path = info[0].As<Napi::String>(), meta = info[1].As<Napi::String>();
    return RunAsync(env, [h, path, meta]() {
      std::lock_guard<std::mutex> lock(h->mu);
      return h->model->save(path, meta);
    });
  }
  Napi::Value Meta(const Napi::CallbackInfo& info) {
    auto h = get(info.Env());
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("cacheBytes", double(h->model->cache_bytes()));
    o.Set("nativeBytes", double(h->bytes));
    return o;
  }
};

int64_t Int(const Napi::Object& o, const char* key, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("createModel: config.") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= double(lo) && d <= double(hi)) || d != double(int64_t(d)))
    throw Napi::RangeError::New(o.Env(), std::string("createModel: config.") + key + " must be an integer in [" +
                                             std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int64_t(d);
}

// A weight entry, as one of the linear formats (linear_format.h): a Packed int8
// weight (or { packed, actScale }), a Q4 weight, a Sparse weight, GGUF blocks
// ({ storage, offset, ggml: type }) or f32 rows ({ storage, offset }).
struct WeightRef {
  sparq::LinearWeight lw;
  BlockPtr block;  // the storage f32 rows / GGUF blocks point into
};

WeightRef ReadWeight(const Napi::Object& ws, const char* key, int64_t n, int64_t k) {
  Napi::Env env = ws.Env();
  Napi::Value v = ws.Get(key);
  WeightRef r;
  const std::string what = std::string("createModel: weight '") + key + "'";
  auto shaped = [&](sparq::LinearWeight lw) {
    if (lw.n != n || lw.k != k)
      throw Napi::RangeError::New(env, what + ": " + lw.format->name + " weight is [" + std::to_string(lw.n) + ", " + std::to_string(lw.k) +
                                           "], expected [" + std::to_string(n) + ", " + std::to_string(k) + "]");
    r.lw = std::move(lw);
    return r;
  };
  // Linear, Packed, Quant4, Sparse: a weight in its own format
  if (sparq::LinearWeight lw = AnyLinear(v, what.c_str()); lw.present()) return shaped(std::move(lw));
  // { packed, actScale }: an int8 weight with a static per-tensor activation scale
  if (v.IsObject() && v.As<Napi::Object>().Has("packed")) {
    Napi::Object o = v.As<Napi::Object>();
    auto q = Packed::Get(o.Get("packed"), what.c_str());
    const double sc = o.Get("actScale").ToNumber().DoubleValue();
    if (!(sc > 0) || !std::isfinite(sc)) throw Napi::RangeError::New(env, what + ": actScale must be a finite number > 0");
    return shaped(sparq::int8_linear(std::move(q), float(sc)));
  }
  if (!v.IsObject()) throw Napi::TypeError::New(env, what + " is missing");
  Napi::Object o = v.As<Napi::Object>();
  r.block = Storage::Get(o.Get("storage"), what.c_str());
  if (r.block->on_device()) throw Napi::TypeError::New(env, what + ": is on cuda; build the model from CPU weights, then move it with toDevice('cuda')");
  Napi::Value offv = o.Get("offset");
  if (!offv.IsNumber()) throw Napi::TypeError::New(env, what + ": offset must be a number");
  const double off = offv.As<Napi::Number>().DoubleValue();
  // { storage, offset, ggml: type }: a linear kept in GGUF blocks (rows of k / block blocks)
  if (o.Has("ggml")) {
    const double t = o.Get("ggml").ToNumber().DoubleValue();
    const sparq::BlockFormat* f = t == double(int(t)) ? sparq::block_format(int(t)) : nullptr;
    if (!f || !f->quantized) throw Napi::RangeError::New(env, what + ": ggml type " + std::to_string(t) + " is not a block type sparq reads");
    if (k % f->block) throw Napi::RangeError::New(env, what + ": " + f->name + " rows must be a multiple of " + std::to_string(f->block));
    const uint64_t need = uint64_t(n) * uint64_t(k / f->block) * uint64_t(f->bytes);
    if (!(off >= 0) || off != double(int64_t(off)) || uint64_t(off) + need > r.block->bytes)
      throw Napi::RangeError::New(env, what + ": needs " + std::to_string(need) + " bytes at offset " + std::to_string(int64_t(off)) +
                                           " of a " + std::to_string(r.block->bytes) + "-byte storage");
    auto bw = std::make_shared<sparq::BlockWeight>();
    if (Error e = sparq::block_weight(int(f->type), n, k, static_cast<const char*>(r.block->p) + int64_t(off), bw.get()); !e.ok())
      throw Napi::RangeError::New(env, what + ": " + e.message);
    return shaped(sparq::ggml_linear(std::move(bw)));
  }
  const uint64_t bytes = uint64_t(n) * uint64_t(k) * 4;
  if (!(off >= 0) || off != double(int64_t(off)) || uint64_t(off) + bytes > r.block->bytes || int64_t(off) % 4)
    throw Napi::RangeError::New(env, what + ": needs " + std::to_string(bytes) + " bytes at offset " +
                                         std::to_string(int64_t(off)) + " (4-byte aligned) of a " +
                                         std::to_string(r.block->bytes) + "-byte storage");
  return shaped(sparq::f32_linear(reinterpret_cast<const float*>(static_cast<const char*>(r.block->p) + int64_t(off)), n, k, r.block));
}

// createModel(config, weights) -> Promise<Model>
// config: { dim, hidden, layers, heads, kvHeads, vocab, maxSeq, ropeTheta, normEps, ropeNeox, kvType }
// weights: { embed, finalNorm, output, ropeFreqs?, layers: [{ attnNorm, wq, wk, wv | wqkv, bq?, bk?, bv?, qNorm?, kNorm?,
//            wo, ffnNorm, w1, w3 | w13, w2 }] } (? : optional f32 vectors; biases all three or none, norms both or none)
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject())
    throw Napi::TypeError::New(env, "createModel: expected (config, weights)");
  Napi::Object co = info[0].As<Napi::Object>(), wo = info[1].As<Napi::Object>();
  sparq::LlamaConfig c;
  const int64_t big = int64_t(1) << 24;
  c.dim = Int(co, "dim", 1, big);
  c.hidden = Int(co, "hidden", 1, big);
  c.layers = Int(co, "layers", 1, 4096);
  c.heads = Int(co, "heads", 1, 4096);
  c.kv_heads = Int(co, "kvHeads", 1, 4096);
  c.vocab = Int(co, "vocab", 1, big);
  c.max_seq = Int(co, "maxSeq", 1, big);
  c.kv_type = sparq::KvType(Int(co, "kvType", 0, 2));
  c.max_sequences = co.Has("maxSequences") && !co.Get("maxSequences").IsUndefined() ? Int(co, "maxSequences", 1, 4096) : 1;
  c.rope_theta = float(co.Get("ropeTheta").ToNumber().DoubleValue());
  c.norm_eps = float(co.Get("normEps").ToNumber().DoubleValue());
  c.rope_neox = co.Get("ropeNeox").ToBoolean().Value();
  c.head_dim = co.Has("headDim") ? Int(co, "headDim", 0, big) : 0;
  if (!c.head_dim && c.dim % c.heads) throw Napi::RangeError::New(env, "createModel: dim must be a multiple of heads");
  const int64_t hd = c.head_dim ? c.head_dim : c.dim / c.heads, kvd = c.kv_heads * hd, qd = c.heads * hd;

  // Weights stay where the caller put them: f32 in its storages (kept alive
  // here), int8 in its packed weights (shared).
  auto h = std::make_shared<Held>();
  auto w = std::make_shared<sparq::LlamaWeights>();
  w->layers.resize(size_t(c.layers));
  auto keep = [&](const WeightRef& r) {
    if (r.block && std::find(h->keep.begin(), h->keep.end(), r.block) == h->keep.end()) {
      h->keep.push_back(r.block);
      h->bytes += int64_t(r.block->bytes);
    }
    // native memory the formats own (a weight shared by two entries counts once)
    if (r.lw.bytes() && std::find(h->owned.begin(), h->owned.end(), r.lw.data) == h->owned.end()) {
      h->owned.push_back(r.lw.data);
      h->bytes += int64_t(r.lw.bytes());
    }
  };
  auto lin = [&](const Napi::Object& o, const char* key, int64_t n, int64_t k, sparq::LinearWeight* lw) {
    const WeightRef r = ReadWeight(o, key, n, k);
    *lw = r.lw;
    keep(r);
  };
  auto vec = [&](const Napi::Object& o, const char* key, int64_t n, const float** dst) {
    if (AnyLinear(o.Get(key), key).present()) throw Napi::TypeError::New(env, std::string("createModel: '") + key + "' must be f32");
    const WeightRef r = ReadWeight(o, key, 1, n);
    if (!sparq::f32_rows(r.lw)) throw Napi::TypeError::New(env, std::string("createModel: '") + key + "' must be f32");
    *dst = sparq::f32_rows(r.lw);
    keep(r);
  };
  {  // the embedding: f32, or GGUF blocks ({ storage, offset, ggml })
    const WeightRef r = ReadWeight(wo, "embed", c.vocab, c.dim);
    if (!r.lw.format->row_f32) throw Napi::TypeError::New(env, "createModel: 'embed' must be f32 or GGUF blocks");
    w->embed = r.lw;
    keep(r);
  }
  // an optional f32 vector: absent (or undefined) leaves *dst null
  auto opt = [&](const Napi::Object& o, const char* key, int64_t n, const float** dst) {
    if (o.Has(key) && !o.Get(key).IsUndefined()) vec(o, key, n, dst);
  };
  vec(wo, "finalNorm", c.dim, &w->final_norm);
  opt(wo, "ropeFreqs", hd / 2, &w->rope_freqs);
  lin(wo, "output", c.vocab, c.dim, &w->output);
  Napi::Value lv = wo.Get("layers");
  if (!lv.IsArray() || lv.As<Napi::Array>().Length() != uint32_t(c.layers))
    throw Napi::RangeError::New(env, "createModel: weights.layers must have one entry per layer");
  Napi::Array la = lv.As<Napi::Array>();
  for (int64_t i = 0; i < c.layers; ++i) {
    Napi::Value e = la.Get(uint32_t(i));
    if (!e.IsObject()) throw Napi::TypeError::New(env, "createModel: weights.layers[" + std::to_string(i) + "] must be an object");
    Napi::Object lo = e.As<Napi::Object>();
    sparq::LlamaLayer& L = w->layers[size_t(i)];
    vec(lo, "attnNorm", c.dim, &L.attn_norm);
    vec(lo, "ffnNorm", c.dim, &L.ffn_norm);
    opt(lo, "bq", qd, &L.bq);
    opt(lo, "bk", kvd, &L.bk);
    opt(lo, "bv", kvd, &L.bv);
    opt(lo, "qNorm", hd, &L.q_norm);
    opt(lo, "kNorm", hd, &L.k_norm);
    if (lo.Has("wqkv")) {
      lin(lo, "wqkv", qd + 2 * kvd, c.dim, &L.wqkv);
    } else {
      lin(lo, "wq", qd, c.dim, &L.wq);
      lin(lo, "wk", kvd, c.dim, &L.wk);
      lin(lo, "wv", kvd, c.dim, &L.wv);
    }
    lin(lo, "wo", c.dim, qd, &L.wo);
    if (lo.Has("w13")) {
      lin(lo, "w13", 2 * c.hidden, c.dim, &L.w13);
    } else {
      lin(lo, "w1", c.hidden, c.dim, &L.w1);
      lin(lo, "w3", c.hidden, c.dim, &L.w3);
    }
    lin(lo, "w2", c.dim, c.hidden, &L.w2);
  }
  // off the JS thread: the checks and the KV cache allocation
  return RunAsync(
      env,
      [h, c, w]() {
        Error e = sparq::LlamaModel::create(c, std::move(*w), &h->model);
        if (e.ok()) h->bytes += int64_t(h->model->cache_bytes());
        return e;
      },
      [h](Napi::Env e) -> Napi::Value { return Model::Wrap(e, h); });
}
}  // namespace

void RegisterModel(Napi::Env env, Napi::Object exports) {
  Model::Export(env, exports, "Model");
  Export(env, exports, {{"createModel", CreateModel}});
}

}  // namespace sparq_addon
