// linear_format.h - the linear weight formats, one table row each.
//
// A LinearWeight is {format, data}: `format` is a row of the table below and
// `data` the format's own object (shared: the addon's wrapper, the model and a
// GPU upload may hold the same one). Everything that handles a weight - the
// forward pass, saving, the GPU upload, the addon's bookkeeping - calls the
// row's functions and never asks which format it holds. The rows:
//
//   f32     float rows [n, k] (not copied: a view into a file image or storage)
//   int8    PackedWeight, the n16k4 layout of sparq/formats.h (per channel or
//           per group, symmetric or asymmetric, dynamic or static activations)
//   int4    PackedQ4 (q4.h): [-7, 7] in blocks of 32, scales per 32 / 64 / 128
//   sparse  SparseWeight (sparse.h): csr, bitmask or n:m, f32 or int8 values
//   ggml    BlockWeight (quants.h): GGUF blocks as stored; its own table of
//           block types (Q4_0 ... IQ4_XS) sits below this row
//
// A new format is one row here (linear_formats.cpp) + its kernels + tests; see
// docs/DESIGN.md ("Weight formats").
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/sparq.h"

// Returns the Error of `expr` from the enclosing function when it failed.
#define SPARQ_TRY(expr)         \
  do {                          \
    ::sparq::Error e_ = (expr); \
    if (!e_.ok()) return e_;    \
  } while (0)

namespace sparq {

struct LinearWeight;

// The tensors a saved model holds for one weight, and its "sparq.linears" entry.
struct SavedTensor {
  std::string name, dtype;  // safetensors dtype: "F32", "I8", "U8" ...
  std::vector<int64_t> shape;
  int64_t bytes = 0;
  std::function<Error(std::FILE*)> write;  // writes exactly `bytes`
};
struct SaveList {
  std::vector<SavedTensor> tensors;
  std::string desc;  // "NAME":{...},... (JSON members)
  // A tensor whose bytes are in memory (kept alive by the model while saving).
  void raw(const std::string& name, const char* dtype, std::vector<int64_t> shape, const void* p, int64_t bytes);
  // Starts NAME's description with "kind": the format's name (the caller adds members and closes it).
  void begin(const std::string& name, const char* kind);
};
Error write_bytes(std::FILE* f, const void* p, size_t bytes);

// One tensor of a saved linear ("NAME.<suffix>"), as the file holds it.
struct SavedPart {
  std::string suffix, dtype;
  std::vector<int64_t> shape;
  const void* p = nullptr;
  int64_t bytes = 0;
};
// A saved linear [n, k]: the members of its "sparq.linears" entry and its tensors.
struct SavedLinear {
  int64_t n = 0, k = 0;
  std::vector<std::pair<std::string, double>> nums;  // numbers, and booleans as 1 / 0
  std::vector<std::pair<std::string, std::string>> texts;
  std::vector<SavedPart> parts;
  std::string name;  // for messages
  double num(const char* key, double absent) const;
  std::string text(const char* key) const;
  const SavedPart* find(const char* suffix) const;  // nullptr when absent
  // The part `suffix`, checked against dtype and shape (an error naming the tensor otherwise).
  Error part(const char* suffix, const char* dtype, const std::vector<int64_t>& shape, const SavedPart** out) const;
};

// How a GPU runs a format: its f32 rows, int8 rows with group scales, or sparse
// (the SparseWeight's own arrays).
enum class DeviceForm { f32, s8, sparse };

// Int8 rows for the GPU: q [n, k], scales [n, groups]; group 0 = per channel.
struct S8Rows {
  std::vector<int8_t> q;
  std::vector<float> scales;
  int64_t group = 0, groups = 1;
};

struct LinearFormat {
  const char* name;  // "f32", "int8", "int4", "sparse", "ggml" (the "kind" of saved models)
  // The shape the data holds.
  void (*shape)(const void* data, int64_t* n, int64_t* k);
  // Native bytes the data owns (0 for views of memory owned elsewhere).
  size_t (*bytes)(const void* data);
  // Where its values live (two weights of one format over the same memory are one weight).
  const void* (*memory)(const void* data);
  // y[m, n] = x[m, k] . W^T (the format's activation contract).
  Error (*linear)(const LinearWeight& w, const float* x, int64_t m, float* y);
  // Row r's values, exactly (an embedding lookup); nullptr: not usable as an embedding.
  Error (*row_f32)(const LinearWeight& w, int64_t r, float* out);
  // All n * k values in f32 (int formats: value x scale, exactly as the kernels see them).
  Error (*to_f32)(const LinearWeight& w, float* out);
  // Its tensors and description in a saved model (safetensors, see llama_save.cpp),
  // and back (untrusted input: every size and value is checked). nullptr load:
  // the format is a view of the file, placed by the loader itself (f32, ggml).
  void (*save)(const LinearWeight& w, const std::string& name, SaveList& out);
  Error (*load)(const SavedLinear& in, LinearWeight* out);
  DeviceForm device;
  // DeviceForm::f32: the rows [n, k] (*rows points into the data, or into `staging` when decoded).
  Error (*device_f32)(const LinearWeight& w, std::vector<float>* staging, const float** rows);
  // DeviceForm::s8: values and scales (an error where the GPU lacks the variant).
  Error (*device_s8)(const LinearWeight& w, S8Rows* out);
};

// One linear weight [n, k] (nn.Linear layout [out, in]).
struct LinearWeight {
  const LinearFormat* format = nullptr;
  std::shared_ptr<const void> data;
  int64_t n = 0, k = 0;
  float act_scale = 0.f;  // int8: one static activation scale (per tensor); 0: dynamic per token
  bool present() const { return format != nullptr; }
  template <class T>
  const T& as() const { return *static_cast<const T*>(data.get()); }
  size_t bytes() const { return format ? format->bytes(data.get()) : 0; }
  // The same values: same format and shape over the same memory (a tied embedding and classifier).
  bool same(const LinearWeight& o) const {
    return format && format == o.format && n == o.n && k == o.k && format->memory(data.get()) == o.format->memory(o.data.get());
  }
};

extern const LinearFormat kLinearF32, kLinearInt8, kLinearInt4, kLinearSparse, kLinearGgml;
// Every row (count in *n), and the row named `name` (nullptr if none).
const LinearFormat* const* linear_formats(int* n);
const LinearFormat* linear_format(const std::string& name);

class PackedWeight;
struct PackedQ4;
struct SparseWeight;
struct BlockWeight;
// Weights of each format. f32 / ggml data is not owned: `owner` keeps it alive
// (the aliasing shared_ptr holds the owner; nullptr: the caller guarantees it).
LinearWeight f32_linear(const float* w, int64_t n, int64_t k, std::shared_ptr<const void> owner);
LinearWeight int8_linear(std::shared_ptr<const PackedWeight> w, float act_scale = 0.f);
LinearWeight int4_linear(std::shared_ptr<const PackedQ4> w);
LinearWeight sparse_linear(std::shared_ptr<const SparseWeight> w);
LinearWeight ggml_linear(std::shared_ptr<const BlockWeight> w);
// The rows of an f32 weight (nullptr for any other format).
const float* f32_rows(const LinearWeight& w);

// y[m, n] = x[m, k] . W^T through w's format.
Error linear(const float* x, int64_t m, const LinearWeight& w, float* y);
// w holds [n, k] in a known format (name: for the message).
Error check_linear(const LinearWeight& w, int64_t n, int64_t k, const char* name);

}  // namespace sparq
