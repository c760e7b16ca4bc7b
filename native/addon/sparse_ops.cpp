// sparse_ops.cpp - the JS `Sparse` class (a pruned weight in csr / bitmask /
// N:M form) and the sparse x dense product.
#include <cstring>

#include "../cpu/sparse.h"
#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {

class Sparse : public NativeHandle<Sparse, std::shared_ptr<sparq::SparseWeight>> {
 public:
  static constexpr const char* kExpected = "a sparse weight";
  static constexpr const char* kDisposed = "sparse weight has been disposed";
  static Napi::FunctionReference& Ctor(InstanceData& d) { return d.sparse_ctor; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Sparse",
                       {InstanceMethod("meta", &Sparse::Meta), InstanceMethod("toDense", &Sparse::ToDense),
                        InstanceMethod("dispose", &Sparse::Dispose)});
  }
  explicit Sparse(const Napi::CallbackInfo& info) : NativeHandle(info) {}
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<sparq::SparseWeight> s) {
    const auto bytes = int64_t(s->bytes());
    return NativeHandle::Wrap(env, std::move(s), bytes);
  }

 private:
  Napi::Value Meta(const Napi::CallbackInfo& info) {
    const auto keep = Owned("meta");  // held for the call: a setter run by o.Set could dispose() this object
    const sparq::SparseWeight& s = *keep;
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("format", sparq::sparse_format_name(s.format));
    o.Set("n", double(s.n));
    o.Set("k", double(s.k));
    o.Set("nnz", double(s.nnz));
    o.Set("int8", s.int8);
    o.Set("int4", s.int4);
    o.Set("group", double(s.group));
    o.Set("N", s.N);
    o.Set("M", s.M);
    o.Set("bytes", double(s.bytes()));
    return o;
  }
  // toDense(out, outOff) -> Promise (f32 [n, k], dequantized)
  Napi::Value ToDense(const Napi::CallbackInfo& info) {
    std::shared_ptr<sparq::SparseWeight> s = Owned("toDense");
    const Span o = ArgSpan(info, 0, "toDense", "out", uint64_t(s->n) * uint64_t(s->k) * 4);
    return RunAsync(info.Env(), [s, o]() {
      sparq::sparse_to_dense(*s, o.ptr<float>());
      return Error{};
    });
  }
};

// sparseFromDense(w, wOff, n, k, format ('csr' | 'bitmask' | 'nm'), N, M, int8, sync) -> Sparse (sync) or Promise<Sparse>
Napi::Value SparseFromDense(const Napi::CallbackInfo& info) {
  const char* op = "sparseFromDense";
  const int64_t n = ArgInt(info, 2, op, "n", 1, kMaxDim), k = ArgInt(info, 3, op, "k", 1, kMaxDim);
  sparq::SparseFormat format;
  if (!info[4].IsString() || !sparq::parse_sparse_format(info[4].As<Napi::String>().Utf8Value(), &format))
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": format must be one of sparseFormats");
  const int N = int(ArgInt(info, 5, op, "N", 0, 16)), M = int(ArgInt(info, 6, op, "M", 0, 16));
  const bool int8 = info.Length() > 7 && info[7].ToBoolean().Value();
  const Span w = ArgSpan(info, 0, op, "weight", uint64_t(n) * uint64_t(k) * 4);
  auto out = std::make_shared<std::unique_ptr<sparq::SparseWeight>>();
  auto work = [w, n, k, format, N, M, int8, out]() { return sparq::sparse_from_dense(w.ptr<float>(), n, k, format, N, M, int8, out.get()); };
  auto done = [out](Napi::Env e) -> Napi::Value { return Sparse::Wrap(e, std::shared_ptr<sparq::SparseWeight>(std::move(*out))); };
  return RunMaybeSync(info.Env(), info.Length() > 8 && info[8].ToBoolean().Value(), work, done);
}

// sparseQuantize(sparse, bits = 8, group = 64) -> Sparse with int8 values (one scale per
// row) or int4 values (f16 scales per group of columns) (sync: one pass over the values)
Napi::Value SparseQuantize(const Napi::CallbackInfo& info) {
  const char* op = "quantize";
  auto s = Sparse::Get(info[0], op);
  const int64_t bits = info.Length() > 1 && !info[1].IsUndefined() ? ArgInt(info, 1, op, "bits", 4, 8) : 8;
  const int64_t group = info.Length() > 2 && !info[2].IsUndefined() ? ArgInt(info, 2, op, "group", 1, 1 << 20) : 64;
  if (bits != 4 && bits != 8) throw Napi::RangeError::New(info.Env(), std::string(op) + ": bits must be 4 or 8");
  std::unique_ptr<sparq::SparseWeight> q;
  const Error err = bits == 4 ? sparq::sparse_quantize4(*s, group, &q) : sparq::sparse_quantize(*s, &q);
  if (!err.ok()) throw Napi::Error::New(info.Env(), err.message);
  return Sparse::Wrap(info.Env(), std::shared_ptr<sparq::SparseWeight>(std::move(q)));
}

// spmm(sparse, x, xOff, m, bias | null, biasOff, out, outOff) -> Promise: out[m, n] = x[m, k] . W^T + bias
Napi::Value Spmm(const Napi::CallbackInfo& info) {
  const char* op = "spmm";
  auto s = Sparse::Get(info[0], op);
  const int64_t m = ArgInt(info, 3, op, "m", 1, kMaxDim);
  const Span x = ArgSpan(info, 1, op, "x", uint64_t(m) * uint64_t(s->k) * 4);
  const Span bias = ArgSpan(info, 4, op, "bias", uint64_t(s->n) * 4, true);
  const Span o = ArgSpan(info, 6, op, "out", uint64_t(m) * uint64_t(s->n) * 4);
  return RunAsync(info.Env(), [s, x, m, bias, o]() {
    return sparq::spmm(*s, x.ptr<float>(), m, bias.block ? bias.ptr<float>() : nullptr, o.ptr<float>());
  });
}

// sparseConcat([a, b, ...]) -> Sparse: the rows of a, then b, ... (same k, format and values)
Napi::Value SparseConcat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "sparseConcat: expected an array of sparse weights");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<std::shared_ptr<sparq::SparseWeight>> parts;
  for (uint32_t i = 0; i < arr.Length(); ++i) parts.push_back(Sparse::Get(arr.Get(i), "sparseConcat"));
  std::vector<const sparq::SparseWeight*> ptrs;
  for (auto& p : parts) ptrs.push_back(p.get());
  std::unique_ptr<sparq::SparseWeight> out;
  const Error err = sparq::sparse_concat_rows(ptrs, &out);
  if (!err.ok()) throw Napi::Error::New(env, err.message);
  return Sparse::Wrap(env, std::shared_ptr<sparq::SparseWeight>(std::move(out)));
}

}  // namespace

std::shared_ptr<sparq::SparseWeight> GetSparse(const Napi::Value& v, const char* what) { return Sparse::Get(v, what); }

void RegisterSparse(Napi::Env env, Napi::Object exports) {
  Sparse::Export(env, exports, "Sparse");
  Export(env, exports, {
      {"sparseFromDense", SparseFromDense},
      {"spmm", Spmm},
      {"sparseQuantize", SparseQuantize},
      {"sparseConcat", SparseConcat},
  });
  Napi::Array names = Napi::Array::New(env);
  for (sparq::SparseFormat f : sparq::kSparseFormats) names.Set(names.Length(), sparq::sparse_format_name(f));
  exports.Set("sparseFormats", names);
}

}  // namespace sparq_addon
