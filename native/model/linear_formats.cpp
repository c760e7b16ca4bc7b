// linear_formats.cpp - the rows of the linear weight format table (linear_format.h).
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstring>
#include <new>

#include "../cpu/q4.h"
#include "../cpu/quants.h"
#include "../cpu/sparse.h"
#include "../cpu/thread_pool.h"
#include "linear_format.h"

namespace sparq {

Error write_bytes(std::FILE* f, const void* p, size_t bytes) {
  if (bytes && std::fwrite(p, 1, bytes, f) != bytes)
    return Error::make(Status::internal, std::string("saveModel: write failed: ") + std::strerror(errno));
  return Error{};
}

void SaveList::raw(const std::string& name, const char* dtype, std::vector<int64_t> shape, const void* p, int64_t bytes) {
  tensors.push_back({name, dtype, std::move(shape), bytes, [p, bytes](std::FILE* f) { return write_bytes(f, p, size_t(bytes)); }});
}

void SaveList::begin(const std::string& name, const char* kind) {
  if (!desc.empty()) desc += ",";
  desc += "\"" + name + "\":{\"kind\":\"" + kind + "\"";
}

double SavedLinear::num(const char* key, double absent) const {
  for (const auto& kv : nums)
    if (kv.first == key) return kv.second;
  return absent;
}

std::string SavedLinear::text(const char* key) const {
  for (const auto& kv : texts)
    if (kv.first == key) return kv.second;
  return "";
}

const SavedPart* SavedLinear::find(const char* suffix) const {
  for (const SavedPart& q : parts)
    if (q.suffix == suffix) return &q;
  return nullptr;
}

Error SavedLinear::part(const char* suffix, const char* dtype, const std::vector<int64_t>& shape, const SavedPart** out) const {
  const auto dims = [](const std::vector<int64_t>& v) {
    std::string t = "[";
    for (size_t i = 0; i < v.size(); ++i) t += (i ? ", " : "") + std::to_string(v[i]);
    return t + "]";
  };
  const std::string what = "tensor " + name + "." + suffix;
  const SavedPart* q = find(suffix);
  if (!q) return Error::make(Status::invalid_argument, what + " is missing");
  if (q->dtype != dtype || q->shape != shape)
    return Error::make(Status::invalid_argument, what + " is " + q->dtype + " " + dims(q->shape) + ", expected " + dtype + " " + dims(shape));
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const int64_t es = q->dtype == "I8" || q->dtype == "U8" ? 1 : q->dtype == "U16" || q->dtype == "F16" ? 2 : q->dtype == "I64" ? 8 : 4;
  if (q->bytes != count * es || (!q->p && q->bytes)) return Error::make(Status::invalid_argument, what + " has " + std::to_string(q->bytes) + " bytes");
  *out = q;
  return Error{};
}

namespace {

Error oom(const char* what) { return Error::make(Status::out_of_memory, std::string("out of host memory ") + what); }

template <class V>
Error sized(V* v, size_t n) {
  try {
    v->resize(n);
  } catch (...) {
    return oom("staging a weight");
  }
  return Error{};
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char b[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(b, sizeof b, f, ap);
  va_end(ap);
  return b;
}

// --- f32: row-major [n, k], a view ----------------------------------------------------
struct F32Rows {
  const float* p;
  int64_t n, k;
};
const F32Rows& f32_of(const LinearWeight& w) { return w.as<F32Rows>(); }

const LinearFormat* const kAll[] = {&kLinearF32, &kLinearInt8, &kLinearInt4, &kLinearSparse, &kLinearGgml};

}  // namespace

const LinearFormat kLinearF32 = {
    "f32",
    [](const void* d, int64_t* n, int64_t* k) {
      *n = static_cast<const F32Rows*>(d)->n;
      *k = static_cast<const F32Rows*>(d)->k;
    },
    [](const void*) -> size_t { return 0; },
    [](const void* d) -> const void* { return static_cast<const F32Rows*>(d)->p; },
    [](const LinearWeight& w, const float* x, int64_t m, float* y) { return linear_f32(x, m, w.k, f32_of(w).p, w.n, nullptr, y); },
    [](const LinearWeight& w, int64_t r, float* out) {
      std::memcpy(out, f32_of(w).p + r * w.k, size_t(w.k) * 4);
      return Error{};
    },
    [](const LinearWeight& w, float* out) {
      std::memcpy(out, f32_of(w).p, size_t(w.n * w.k) * 4);
      return Error{};
    },
    [](const LinearWeight& w, const std::string& name, SaveList& out) {
      out.begin(name, "f32");
      out.desc += "}";
      out.raw(name + ".weight", "F32", {w.n, w.k}, f32_of(w).p, w.n * w.k * 4);
    },
    nullptr,
    DeviceForm::f32,
    [](const LinearWeight& w, std::vector<float>*, const float** rows) {
      *rows = f32_of(w).p;
      return Error{};
    },
    nullptr,
};

// --- int8: the n16k4 packed layout ---------------------------------------------------
const LinearFormat kLinearInt8 = {
    "int8",
    [](const void* d, int64_t* n, int64_t* k) {
      *n = static_cast<const PackedWeight*>(d)->view().n;
      *k = static_cast<const PackedWeight*>(d)->view().k;
    },
    [](const void* d) { return static_cast<const PackedWeight*>(d)->bytes(); },
    [](const void* d) -> const void* { return static_cast<const PackedWeight*>(d)->view().data; },
    [](const LinearWeight& w, const float* x, int64_t m, float* y) {
      return linear_s8(x, m, w.k, w.as<PackedWeight>().view(), nullptr, w.act_scale, y);
    },
    nullptr,
    [](const LinearWeight& w, float* out) {
      dequantize_weight(w.as<PackedWeight>().view(), out);
      return Error{};
    },
    [](const LinearWeight& w, const std::string& name, SaveList& out) {
      const PackedS8& p = w.as<PackedWeight>().view();
      out.begin(name, "int8");
      out.desc += fmt(",\"group\":%lld,\"actScale\":%.9g,\"asymmetric\":%s}", static_cast<long long>(p.groups == 1 ? 0 : p.group),
                      double(w.act_scale), p.zeros ? "true" : "false");
      // values, scales and zeros come out of the packed layout when written (one copy at a time)
      auto pw = std::static_pointer_cast<const PackedWeight>(w.data);
      out.tensors.push_back({name + ".q", "I8", {w.n, w.k}, w.n * w.k, [pw](std::FILE* f) {
                               std::vector<int8_t> v(size_t(pw->view().n * pw->view().k));
                               unpack_s8(pw->view(), v.data(), nullptr, nullptr);
                               return write_bytes(f, v.data(), v.size());
                             }});
      out.tensors.push_back({name + ".scale", "F32", {w.n, p.groups}, w.n * p.groups * 4, [pw](std::FILE* f) {
                               std::vector<float> s(size_t(pw->view().n * pw->view().groups));
                               unpack_s8(pw->view(), nullptr, s.data(), nullptr);
                               return write_bytes(f, s.data(), s.size() * 4);
                             }});
      if (p.zeros)
        out.tensors.push_back({name + ".zero", "I32", {w.n, p.groups}, w.n * p.groups * 4, [pw](std::FILE* f) {
                                 std::vector<int32_t> z(size_t(pw->view().n * pw->view().groups));
                                 unpack_s8(pw->view(), nullptr, nullptr, z.data());
                                 return write_bytes(f, z.data(), z.size() * 4);
                               }});
    },
    [](const SavedLinear& in, LinearWeight* out) {
      const double group = in.num("group", 0), act = in.num("actScale", 0);
      if (!(group >= 0 && group <= double(in.k) && group == double(int64_t(group))))
        return Error::make(Status::invalid_argument, in.name + ": bad group " + std::to_string(group));
      if (!(act >= 0 && std::isfinite(act))) return Error::make(Status::invalid_argument, in.name + ": bad activation scale");
      const int64_t g = int64_t(group), groups = g ? (in.k + g - 1) / g : 1;
      const SavedPart *q = nullptr, *sc = nullptr, *z = nullptr;
      SPARQ_TRY(in.part("q", "I8", {in.n, in.k}, &q));
      SPARQ_TRY(in.part("scale", "F32", {in.n, groups}, &sc));
      if (in.num("asymmetric", 0) != 0) SPARQ_TRY(in.part("zero", "I32", {in.n, groups}, &z));
      // scales from a file: NaN / infinite / negative ones are damage, not weights
      const float* s = static_cast<const float*>(sc->p);
      for (int64_t i = 0; i < in.n * groups; ++i)
        if (!(std::isfinite(s[i]) && s[i] >= 0.f)) return Error::make(Status::invalid_argument, in.name + ": int8 scales must be finite and >= 0");
      std::unique_ptr<PackedWeight> p;
      SPARQ_TRY(pack_s8(static_cast<const int8_t*>(q->p), in.n, in.k, g, s, z ? static_cast<const int32_t*>(z->p) : nullptr, &p));
      *out = int8_linear(std::move(p), float(act));
      return Error{};
    },
    DeviceForm::s8,
    nullptr,
    [](const LinearWeight& w, S8Rows* out) {
      const PackedWeight& pw = w.as<PackedWeight>();
      const PackedS8& p = pw.view();
      if (pw.asymmetric()) return Error::make(Status::unsupported, "cuda: asymmetric int8 weights are not supported on the GPU; quantize symmetric");
      if (!p.scales) return Error::make(Status::unsupported, "cuda: int8 weights without scales (exact mode) cannot be used as a linear on the GPU");
      out->group = p.groups > 1 ? pw.user_group() : 0;
      out->groups = p.groups;
      if (p.groups > 1 && (out->group <= 0 || out->group % 32)) return Error::make(Status::unsupported, "cuda: int8 scale groups must be a multiple of 32");
      SPARQ_TRY(sized(&out->q, size_t(p.n * p.k)));
      SPARQ_TRY(sized(&out->scales, size_t(p.n * p.groups)));
      unpack_s8(p, out->q.data(), out->scales.data(), nullptr);
      return Error{};
    },
};

// --- int4: PackedQ4 ---------------------------------------------------------------------
const LinearFormat kLinearInt4 = {
    "int4",
    [](const void* d, int64_t* n, int64_t* k) {
      *n = static_cast<const PackedQ4*>(d)->n;
      *k = static_cast<const PackedQ4*>(d)->k;
    },
    [](const void* d) { return static_cast<const PackedQ4*>(d)->bytes(); },
    [](const void* d) -> const void* { return static_cast<const PackedQ4*>(d)->data.data(); },
    [](const LinearWeight& w, const float* x, int64_t m, float* y) { return linear_q4(w.as<PackedQ4>(), x, m, y); },
    nullptr,
    [](const LinearWeight& w, float* out) {
      const PackedQ4& p = w.as<PackedQ4>();
      std::vector<int8_t> row;
      SPARQ_TRY(sized(&row, size_t(p.k_pad)));
      for (int64_t j = 0; j < p.n; ++j) {
        q4_row(p, j, row.data());
        for (int64_t c = 0; c < p.k; ++c) out[j * p.k + c] = float(row[size_t(c)]) * p.scale[size_t(j * p.groups + c / p.group)];
      }
      return Error{};
    },
    [](const LinearWeight& w, const std::string& name, SaveList& out) {
      const PackedQ4& p = w.as<PackedQ4>();
      out.begin(name, "int4");
      out.desc += fmt(",\"group\":%lld}", static_cast<long long>(p.group));
      out.raw(name + ".q4", "U8", {p.n, p.row_bytes()}, p.data.data(), p.n * p.row_bytes());
      out.raw(name + ".scale", "F32", {p.n, p.groups}, p.scale.data(), p.n * p.groups * 4);
    },
    [](const SavedLinear& in, LinearWeight* out) {
      const double group = in.num("group", 0);
      if (group != 32 && group != 64 && group != 128) return Error::make(Status::invalid_argument, in.name + ": bad group " + std::to_string(group));
      const int64_t g = int64_t(group);
      const SavedPart *nib = nullptr, *sc = nullptr;
      SPARQ_TRY(in.part("q4", "U8", {in.n, round_up(in.k, 32) / 2}, &nib));
      SPARQ_TRY(in.part("scale", "F32", {in.n, (in.k + g - 1) / g}, &sc));
      std::unique_ptr<PackedQ4> p;
      SPARQ_TRY(q4_from_nibbles(static_cast<const uint8_t*>(nib->p), static_cast<const float*>(sc->p), in.n, in.k, g, &p));
      *out = int4_linear(std::move(p));
      return Error{};
    },
    DeviceForm::s8,
    nullptr,
    [](const LinearWeight& w, S8Rows* out) {
      const PackedQ4& p = w.as<PackedQ4>();
      SPARQ_TRY(sized(&out->q, size_t(p.n * p.k)));
      try {
        out->scales = p.scale;
      } catch (...) {
        return oom("staging a weight");
      }
      out->group = p.group;
      out->groups = p.groups;
      q4_unpack(p, out->q.data());
      return Error{};
    },
};

// --- sparse: csr / bitmask / n:m ---------------------------------------------------------
const LinearFormat kLinearSparse = {
    "sparse",
    [](const void* d, int64_t* n, int64_t* k) {
      *n = static_cast<const SparseWeight*>(d)->n;
      *k = static_cast<const SparseWeight*>(d)->k;
    },
    [](const void* d) { return static_cast<const SparseWeight*>(d)->bytes(); },
    [](const void* d) -> const void* { return d; },
    [](const LinearWeight& w, const float* x, int64_t m, float* y) { return spmm(w.as<SparseWeight>(), x, m, nullptr, y); },
    nullptr,
    [](const LinearWeight& w, float* out) {
      sparse_to_dense(w.as<SparseWeight>(), out);
      return Error{};
    },
    [](const LinearWeight& w, const std::string& name, SaveList& out) {
      const SparseWeight& s = w.as<SparseWeight>();
      out.begin(name, "sparse");
      out.desc += fmt(",\"format\":\"%s\",\"int8\":%s,\"N\":%d,\"M\":%d,\"nnz\":%lld", sparse_format_name(s.format), s.int8 ? "true" : "false", s.N,
                      s.M, static_cast<long long>(s.nnz));
      out.desc += s.int4 ? fmt(",\"int4\":true,\"group\":%lld}", static_cast<long long>(s.group)) : std::string("}");
      if (s.int4) {
        out.raw(name + ".values", "U8", {(s.nnz + 1) / 2}, s.v4.data(), (s.nnz + 1) / 2);
        out.raw(name + ".scale", "F16", {s.n, s.qgroups()}, s.scale4.data(), s.n * s.qgroups() * 2);
      } else if (s.int8) {
        out.raw(name + ".values", "I8", {s.nnz}, s.vq.data(), s.nnz);
        out.raw(name + ".scale", "F32", {s.n}, s.scale.data(), s.n * 4);
      } else {
        out.raw(name + ".values", "F32", {s.nnz}, s.vf.data(), s.nnz * 4);
      }
      if (s.format != SparseFormat::nm) out.raw(name + ".row_ptr", "I64", {s.n + 1}, s.row_ptr.data(), (s.n + 1) * 8);
      if (s.format == SparseFormat::csr) {
        if (s.narrow) out.raw(name + ".col", "U16", {s.nnz}, s.col16.data(), s.nnz * 2);
        else out.raw(name + ".col", "I32", {s.nnz}, s.col.data(), s.nnz * 4);
      }
      if (s.format == SparseFormat::bitmask) out.raw(name + ".mask", "U32", {s.n, s.words()}, s.mask.data(), s.n * s.words() * 4);
      if (s.format == SparseFormat::nm) out.raw(name + ".idx", "U8", {s.n, s.idx_row_bytes()}, s.idx.data(), s.n * s.idx_row_bytes());
    },
    [](const SavedLinear& in, LinearWeight* out) {
      const std::string f = in.text("format");
      const double nnz = in.num("nnz", -1), N = in.num("N", 0), M = in.num("M", 0);
      SparseParts p;
      if (!parse_sparse_format(f, &p.format) || !(nnz >= 0 && nnz <= double(int64_t(1) << 40) && nnz == double(int64_t(nnz))) ||
          !(N >= 0 && N <= 16 && N == double(int(N))) || !(M >= 0 && M <= 16 && M == double(int(M))))
        return Error::make(Status::invalid_argument, in.name + ": bad sparse entry");
      p.n = in.n;
      p.k = in.k;
      p.nnz = int64_t(nnz);
      p.int8 = in.num("int8", 0) != 0;
      p.int4 = in.num("int4", 0) != 0;
      const double group = in.num("group", 0);
      if (p.int4 && !(group == 32 || group == 64 || group == 128)) return Error::make(Status::invalid_argument, in.name + ": bad int4 sparse group");
      p.group = p.int4 ? int64_t(group) : 0;
      p.N = int(N);
      p.M = int(M);
      const SavedPart* t = nullptr;
      if (p.int4) SPARQ_TRY(in.part("values", "U8", {(p.nnz + 1) / 2}, &t));
      else SPARQ_TRY(in.part("values", p.int8 ? "I8" : "F32", {p.nnz}, &t));
      p.values = t->p;
      if (p.int4) {
        SPARQ_TRY(in.part("scale", "F16", {p.n, (p.k + p.group - 1) / p.group}, &t));
        p.scale4 = static_cast<const uint16_t*>(t->p);
      }
      if (p.int8) {
        SPARQ_TRY(in.part("scale", "F32", {p.n}, &t));
        p.scale = static_cast<const float*>(t->p);
      }
      if (p.format != SparseFormat::nm) {
        SPARQ_TRY(in.part("row_ptr", "I64", {p.n + 1}, &t));
        p.row_ptr = static_cast<const int64_t*>(t->p);
      }
      if (p.format == SparseFormat::csr) {
        const SavedPart* c = in.find("col");
        p.narrow = c && c->dtype == "U16";
        SPARQ_TRY(in.part("col", p.narrow ? "U16" : "I32", {p.nnz}, &t));
        p.col = t->p;
      }
      if (p.format == SparseFormat::bitmask) {
        SPARQ_TRY(in.part("mask", "U32", {p.n, (p.k + 31) / 32}, &t));
        p.mask = static_cast<const uint32_t*>(t->p);
      }
      if (p.format == SparseFormat::nm) {
        SPARQ_TRY(in.part("idx", "U8", {p.n, SparseWeight::idx_row_bytes(p.k, p.N, p.M)}, &t));
        p.idx = static_cast<const uint8_t*>(t->p);
      }
      std::unique_ptr<SparseWeight> w;
      SPARQ_TRY(sparse_from_parts(p, &w));
      *out = sparse_linear(std::move(w));
      return Error{};
    },
    DeviceForm::sparse,
    nullptr,
    nullptr,
};

// --- ggml: GGUF blocks as stored, or repacked (x16) at load (the block types: quants.h) --
namespace {
// All n * k values, exactly (rows gathered from x16 into their stored form first).
Error blocks_to_f32(const BlockWeight& b, float* out) {
  if (!b.x16) return ggml_to_f32(b.data, int(b.fmt->type), b.n * b.k, out);
  parallel_for(b.n, [&](int64_t j) {
    thread_local std::vector<uint8_t> tmp;
    if (int64_t(tmp.size()) < b.row_bytes) tmp.resize(size_t(b.row_bytes));
    b.fmt->to_f32(block_row(b, j, tmp.data()), b.k / b.fmt->block, out + j * b.k);
  });
  return Error{};
}
}  // namespace

const LinearFormat kLinearGgml = {
    "ggml",
    [](const void* d, int64_t* n, int64_t* k) {
      *n = static_cast<const BlockWeight*>(d)->n;
      *k = static_cast<const BlockWeight*>(d)->k;
    },
    // a view of the file, unless repacked (x16: owned)
    [](const void* d) -> size_t {
      const BlockWeight& b = *static_cast<const BlockWeight*>(d);
      return b.x16 ? b.bytes() : 0;
    },
    [](const void* d) -> const void* { return static_cast<const BlockWeight*>(d)->data; },
    [](const LinearWeight& w, const float* x, int64_t m, float* y) { return linear_blocks(w.as<BlockWeight>(), x, m, y); },
    [](const LinearWeight& w, int64_t r, float* out) {
      const BlockWeight& b = w.as<BlockWeight>();
      std::vector<uint8_t> tmp(b.x16 ? size_t(b.row_bytes) : 0);
      b.fmt->to_f32(block_row(b, r, tmp.data()), b.k / b.fmt->block, out);
      return Error{};
    },
    [](const LinearWeight& w, float* out) { return blocks_to_f32(w.as<BlockWeight>(), out); },
    [](const LinearWeight& w, const std::string& name, SaveList& out) {
      const BlockWeight& b = w.as<BlockWeight>();
      out.begin(name, "ggml");
      out.desc += fmt(",\"type\":%d}", int(b.fmt->type));
      if (!b.x16) {
        out.raw(name + ".blocks", "U8", {b.n, b.row_bytes}, b.data, int64_t(b.bytes()));
        return;
      }
      // repacked at load: written back row by row as stored
      SavedTensor t;
      t.name = name + ".blocks";
      t.dtype = "U8";
      t.shape = {b.n, b.row_bytes};
      t.bytes = int64_t(b.bytes());
      std::shared_ptr<const void> keep = w.data;
      t.write = [keep, &b](std::FILE* f) -> Error {
        std::vector<uint8_t> tmp(size_t(b.row_bytes));
        for (int64_t j = 0; j < b.n; ++j) SPARQ_TRY(write_bytes(f, block_row(b, j, tmp.data()), size_t(b.row_bytes)));
        return Error{};
      };
      out.tensors.push_back(std::move(t));
    },
    nullptr,
    DeviceForm::f32,
    [](const LinearWeight& w, std::vector<float>* staging, const float** rows) {
      const BlockWeight& b = w.as<BlockWeight>();  // runs as its exact f32 values
      SPARQ_TRY(sized(staging, size_t(b.n * b.k)));
      SPARQ_TRY(blocks_to_f32(b, staging->data()));
      *rows = staging->data();
      return Error{};
    },
    nullptr,
};

const LinearFormat* const* linear_formats(int* n) {
  *n = int(sizeof kAll / sizeof kAll[0]);
  return kAll;
}

const LinearFormat* linear_format(const std::string& name) {
  for (const LinearFormat* f : kAll)
    if (name == f->name) return f;
  return nullptr;
}

LinearWeight f32_linear(const float* w, int64_t n, int64_t k, std::shared_ptr<const void> owner) {
  struct Held {  // the rows, and the owner of the floats kept alive with them
    F32Rows r;
    std::shared_ptr<const void> owner;
  };
  LinearWeight l;
  auto h = std::make_shared<Held>(Held{{w, n, k}, std::move(owner)});
  l.data = std::shared_ptr<const void>(h, &h->r);
  l.format = &kLinearF32;
  l.n = n;
  l.k = k;
  return l;
}

namespace {
template <class T>
LinearWeight of(const LinearFormat* f, std::shared_ptr<const T> w, float act_scale = 0.f) {
  LinearWeight l;
  if (!w) return l;
  f->shape(w.get(), &l.n, &l.k);
  l.format = f;
  l.data = std::move(w);
  l.act_scale = act_scale;
  return l;
}
}  // namespace

LinearWeight int8_linear(std::shared_ptr<const PackedWeight> w, float act_scale) { return of(&kLinearInt8, std::move(w), act_scale); }
LinearWeight int4_linear(std::shared_ptr<const PackedQ4> w) { return of(&kLinearInt4, std::move(w)); }
LinearWeight sparse_linear(std::shared_ptr<const SparseWeight> w) { return of(&kLinearSparse, std::move(w)); }
LinearWeight ggml_linear(std::shared_ptr<const BlockWeight> w) { return of(&kLinearGgml, std::move(w)); }

const float* f32_rows(const LinearWeight& w) { return w.format == &kLinearF32 ? f32_of(w).p : nullptr; }

Error linear(const float* x, int64_t m, const LinearWeight& w, float* y) {
  if (!w.present()) return Error::make(Status::invalid_argument, "linear: the weight is missing");
  return w.format->linear(w, x, m, y);
}

Error check_linear(const LinearWeight& w, int64_t n, int64_t k, const char* name) {
  const auto bad = [&](const std::string& m) { return Error::make(Status::invalid_argument, "model: " + std::string(name) + m); };
  if (!w.present() || w.n != n || w.k != k)
    return bad(" must be [" + std::to_string(n) + ", " + std::to_string(k) + "]; got [" + std::to_string(w.n) + ", " + std::to_string(w.k) + "]");
  int64_t dn = 0, dk = 0;
  w.format->shape(w.data.get(), &dn, &dk);
  if (dn != n || dk != k) return bad(std::string(": ") + w.format->name + " data is [" + std::to_string(dn) + ", " + std::to_string(dk) + "]");
  return Error{};
}

}  // namespace sparq
