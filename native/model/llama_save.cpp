// llama_save.cpp - writes a model's weights, as they are held (f32, int8
// values + scales, or sparse arrays), to one safetensors file. Tensor names:
//   embed (or embed.blocks: GGUF blocks), final_norm, output (absent when tied), layers.N.attn_norm,
//   layers.N.ffn_norm, and per linear (layers.N.wqkv | wq wk wv, wo,
//   w13 | w1 w3, w2, output):
//   f32:    NAME.weight F32 [n, k]
//   int8:   NAME.q I8 [n, k], NAME.scale F32 [n, groups]
//   int4:   NAME.q4 U8 [n, round_up(k, 32) / 2] (two per byte, see q4.h), NAME.scale F32 [n, groups]
//   GGUF blocks: NAME.blocks U8 [n, row bytes] (the blocks as stored in GGUF; "type": the ggml type id)
//   sparse: NAME.values F32 | I8 [nnz], NAME.scale F32 [n] (int8), NAME.row_ptr I64 [n + 1]
//           (csr, bitmask), NAME.col U16 | I32 [nnz] (csr), NAME.mask U32 [n, words] (bitmask),
//           NAME.idx U8 [n, row bytes] (nm, packed indices)
// and the metadata key "sparq.linears": a JSON object describing each linear.
// The file is written next to the target and renamed into place.
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "llama.h"

namespace sparq {

namespace {

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += ch;
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += ch;
    }
  }
  return o;
}

struct Out {
  std::string name, dtype;
  std::vector<int64_t> shape;
  int64_t bytes = 0;
  std::function<Error(std::FILE*)> write;
};

Error put(std::FILE* f, const void* p, size_t bytes) {
  if (bytes && std::fwrite(p, 1, bytes, f) != bytes) return Error::make(Status::internal, std::string("saveModel: write failed: ") + std::strerror(errno));
  return Error{};
}

void raw(std::vector<Out>& out, const std::string& name, const char* dtype, std::vector<int64_t> shape, const void* p, int64_t bytes) {
  out.push_back({name, dtype, std::move(shape), bytes, [p, bytes](std::FILE* f) { return put(f, p, size_t(bytes)); }});
}

// One linear's tensors, and its description for "sparq.linears".
void linear(std::vector<Out>& out, std::string& desc, const std::string& name, const LinearWeight& w) {
  if (!desc.empty()) desc += ",";
  desc += "\"" + name + "\":{";
  if (w.f32) {
    desc += "\"kind\":\"f32\"";
    raw(out, name + ".weight", "F32", {w.n, w.k}, w.f32, w.n * w.k * 4);
  } else if (w.q) {
    const PackedS8& p = w.q->view();
    const int64_t group = p.groups == 1 ? 0 : p.group;
    char b[160];
    std::snprintf(b, sizeof b, "\"kind\":\"int8\",\"group\":%lld,\"actScale\":%.9g,\"asymmetric\":%s", static_cast<long long>(group),
                  double(w.act_scale), p.zeros ? "true" : "false");
    desc += b;
    // values and scales come out of the packed layout when written (one copy at a time)
    auto pw = w.q;
    out.push_back({name + ".q", "I8", {w.n, w.k}, w.n * w.k, [pw](std::FILE* f) {
                     std::vector<int8_t> v(size_t(pw->view().n * pw->view().k));
                     unpack_s8(pw->view(), v.data(), nullptr, nullptr);
                     return put(f, v.data(), v.size());
                   }});
    out.push_back({name + ".scale", "F32", {w.n, p.groups}, w.n * p.groups * 4, [pw](std::FILE* f) {
                     std::vector<float> s(size_t(pw->view().n * pw->view().groups));
                     unpack_s8(pw->view(), nullptr, s.data(), nullptr);
                     return put(f, s.data(), s.size() * 4);
                   }});
    if (p.zeros)
      out.push_back({name + ".zero", "I32", {w.n, p.groups}, w.n * p.groups * 4, [pw](std::FILE* f) {
                       std::vector<int32_t> z(size_t(pw->view().n * pw->view().groups));
                       unpack_s8(pw->view(), nullptr, nullptr, z.data());
                       return put(f, z.data(), z.size() * 4);
                     }});
  } else if (w.blk) {
    const BlockWeight& b = *w.blk;
    char d[80];
    std::snprintf(d, sizeof d, "\"kind\":\"ggml\",\"type\":%d", int(b.fmt->type));
    desc += d;
    raw(out, name + ".blocks", "U8", {b.n, b.row_bytes}, b.data, int64_t(b.bytes()));
  } else if (w.q4) {
    const PackedQ4& p = *w.q4;
    char b[80];
    std::snprintf(b, sizeof b, "\"kind\":\"int4\",\"group\":%lld", static_cast<long long>(p.group));
    desc += b;
    raw(out, name + ".q4", "U8", {p.n, p.row_bytes()}, p.data.data(), p.n * p.row_bytes());
    raw(out, name + ".scale", "F32", {p.n, p.groups}, p.scale.data(), p.n * p.groups * 4);
  } else {
    const SparseWeight& s = *w.sp;
    static const char* fmt[] = {"csr", "bitmask", "nm"};
    char b[200];
    std::snprintf(b, sizeof b, "\"kind\":\"sparse\",\"format\":\"%s\",\"int8\":%s,\"N\":%d,\"M\":%d,\"nnz\":%lld", fmt[int(s.format)],
                  s.int8 ? "true" : "false", s.N, s.M, static_cast<long long>(s.nnz));
    desc += b;
    if (s.int8) {
      raw(out, name + ".values", "I8", {s.nnz}, s.vq.data(), s.nnz);
      raw(out, name + ".scale", "F32", {s.n}, s.scale.data(), s.n * 4);
    } else {
      raw(out, name + ".values", "F32", {s.nnz}, s.vf.data(), s.nnz * 4);
    }
    if (s.format != SparseFormat::nm) raw(out, name + ".row_ptr", "I64", {s.n + 1}, s.row_ptr.data(), (s.n + 1) * 8);
    if (s.format == SparseFormat::csr) {
      if (s.narrow) raw(out, name + ".col", "U16", {s.nnz}, s.col16.data(), s.nnz * 2);
      else raw(out, name + ".col", "I32", {s.nnz}, s.col.data(), s.nnz * 4);
    }
    if (s.format == SparseFormat::bitmask) raw(out, name + ".mask", "U32", {s.n, s.words()}, s.mask.data(), s.n * s.words() * 4);
    if (s.format == SparseFormat::nm) raw(out, name + ".idx", "U8", {s.n, s.idx_row_bytes()}, s.idx.data(), s.n * s.idx_row_bytes());
  }
  desc += "}";
}

}  // namespace

Error LlamaModel::save(const std::string& path, const std::string& metadata) const {
  const LlamaConfig& c = cfg_;
  if (metadata.size() < 2 || metadata.front() != '{' || metadata.back() != '}') return Error::make(Status::invalid_argument, "saveModel: metadata must be a JSON object");
  std::vector<Out> out;
  std::string desc;
  if (w_.embed_blk) {  // kept in its GGUF blocks ("sparq.linears" entry "embed")
    if (!desc.empty()) desc += ",";
    desc += "\"embed\":{\"kind\":\"ggml\",\"type\":" + std::to_string(int(w_.embed_blk->fmt->type)) + "}";
    raw(out, "embed.blocks", "U8", {c.vocab, w_.embed_blk->row_bytes}, w_.embed_blk->data, int64_t(w_.embed_blk->bytes()));
  } else {
    raw(out, "embed", "F32", {c.vocab, c.dim}, w_.embed, c.vocab * c.dim * 4);
  }
  raw(out, "final_norm", "F32", {c.dim}, w_.final_norm, c.dim * 4);
  const bool tied = (w_.output.f32 && w_.output.f32 == w_.embed) || (w_.embed_blk && w_.output.blk && w_.output.blk->data == w_.embed_blk->data);
  if (!tied) linear(out, desc, "output", w_.output);
  for (int64_t i = 0; i < c.layers; ++i) {
    const LlamaLayer& L = w_.layers[size_t(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    raw(out, p + "attn_norm", "F32", {c.dim}, L.attn_norm, c.dim * 4);
    raw(out, p + "ffn_norm", "F32", {c.dim}, L.ffn_norm, c.dim * 4);
    if (L.wqkv.present()) {
      linear(out, desc, p + "wqkv", L.wqkv);
    } else {
      linear(out, desc, p + "wq", L.wq);
      linear(out, desc, p + "wk", L.wk);
      linear(out, desc, p + "wv", L.wv);
    }
    linear(out, desc, p + "wo", L.wo);
    if (L.w13.present()) {
      linear(out, desc, p + "w13", L.w13);
    } else {
      linear(out, desc, p + "w1", L.w1);
      linear(out, desc, p + "w3", L.w3);
    }
    linear(out, desc, p + "w2", L.w2);
  }
  // header: tensors in order, then the metadata (caller's keys + the linears)
  std::string head = "{";
  int64_t off = 0;
  for (const Out& o : out) {
    head += "\"" + json_escape(o.name) + "\":{\"dtype\":\"" + o.dtype + "\",\"shape\":[";
    for (size_t d = 0; d < o.shape.size(); ++d) head += (d ? "," : "") + std::to_string(o.shape[d]);
    head += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + o.bytes) + "]},";
    off += o.bytes;
  }
  const std::string linears = "{\"tied\":" + std::string(tied ? "true" : "false") + (desc.empty() ? "" : ",") + desc + "}";
  head += "\"__metadata__\":" + metadata.substr(0, metadata.size() - 1) + (metadata.size() > 2 ? "," : "") + "\"sparq.linears\":\"" +
          json_escape(linears) + "\"}}";
  while ((8 + head.size()) % 8) head += ' ';  // tensor data 8-byte aligned
  // written beside the target under a name no other save uses (created exclusively,
  // so nothing existing is clobbered), then renamed over it: readers see the old
  // file or the whole new one, and concurrent saves of one path each land whole
  static std::atomic<uint64_t> seq{std::random_device{}()};
  std::string tmp;
  std::FILE* f = nullptr;
  for (int attempt = 0; attempt < 16 && !f; ++attempt) {
    tmp = path + ".tmp-" + std::to_string(seq.fetch_add(1) % 1000000007);
    f = std::fopen(tmp.c_str(), "wbx");
    if (!f && errno != EEXIST) break;
  }
  if (!f) return Error::make(Status::invalid_argument, "saveModel: cannot write " + tmp + ": " + std::strerror(errno));
  Error e;
  const uint64_t n = head.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  e = put(f, len, 8);
  if (e.ok()) e = put(f, head.data(), head.size());
  try {
    for (const Out& o : out) {
      if (!e.ok()) break;
      e = o.write(f);
    }
  } catch (const std::bad_alloc&) {
    e = Error::make(Status::out_of_memory, "saveModel: out of memory");
  }
  if (std::fclose(f) != 0 && e.ok()) e = Error::make(Status::internal, std::string("saveModel: write failed: ") + std::strerror(errno));
  if (e.ok() && std::rename(tmp.c_str(), path.c_str()) != 0)
    e = Error::make(Status::invalid_argument, "saveModel: cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  if (!e.ok()) std::remove(tmp.c_str());
  return e;
}

}  // namespace sparq
