// llama_save.cpp - writes a model's weights, as they are held (f32, int8
// values + scales, or sparse arrays), to one safetensors file. Each linear's
// tensors come from its format's row (linear_formats.cpp `save`). Tensor names:
//   embed (or embed.blocks: GGUF blocks), final_norm, output (absent when tied), rope_freqs (when
//   set), layers.N.attn_norm, layers.N.ffn_norm, layers.N.bq / bk / bv and layers.N.q_norm / k_norm
//   (F32, when the model has them), and per linear (layers.N.wqkv | wq wk wv, wo,
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

}  // namespace

Error LlamaModel::save(const std::string& path, const std::string& metadata) const {
  const LlamaConfig& c = cfg_;
  if (metadata.size() < 2 || metadata.front() != '{' || metadata.back() != '}') return Error::make(Status::invalid_argument, "saveModel: metadata must be a JSON object");
  SaveList out;
  const auto linear = [&out](const std::string& name, const LinearWeight& w) { w.format->save(w, name, out); };
  if (w_.embed.format == &kLinearF32) {  // f32: "embed" (no "sparq.linears" entry)
    out.raw("embed", "F32", {c.vocab, c.dim}, f32_rows(w_.embed), c.vocab * c.dim * 4);
  } else {  // as its format stores it ("sparq.linears" entry "embed")
    linear("embed", w_.embed);
  }
  out.raw("final_norm", "F32", {c.dim}, w_.final_norm, c.dim * 4);
  const bool tied = w_.output.same(w_.embed);
  if (!tied) linear("output", w_.output);
  const int64_t hd = c.head_dim, qd = c.heads * hd, kvd = c.kv_heads * hd;
  if (w_.rope_freqs) out.raw("rope_freqs", "F32", {hd / 2}, w_.rope_freqs, hd / 2 * 4);
  for (int64_t i = 0; i < c.layers; ++i) {
    const LlamaLayer& L = w_.layers[size_t(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    out.raw(p + "attn_norm", "F32", {c.dim}, L.attn_norm, c.dim * 4);
    out.raw(p + "ffn_norm", "F32", {c.dim}, L.ffn_norm, c.dim * 4);
    if (L.bq) {
      out.raw(p + "bq", "F32", {qd}, L.bq, qd * 4);
      out.raw(p + "bk", "F32", {kvd}, L.bk, kvd * 4);
      out.raw(p + "bv", "F32", {kvd}, L.bv, kvd * 4);
    }
    if (L.q_norm) {
      out.raw(p + "q_norm", "F32", {hd}, L.q_norm, hd * 4);
      out.raw(p + "k_norm", "F32", {hd}, L.k_norm, hd * 4);
    }
    if (L.wqkv.present()) {
      linear(p + "wqkv", L.wqkv);
    } else {
      linear(p + "wq", L.wq);
      linear(p + "wk", L.wk);
      linear(p + "wv", L.wv);
    }
    linear(p + "wo", L.wo);
    if (L.w13.present()) {
      linear(p + "w13", L.w13);
    } else {
      linear(p + "w1", L.w1);
      linear(p + "w3", L.w3);
    }
    linear(p + "w2", L.w2);
  }
  // header: tensors in order, then the metadata (caller's keys + the linears)
  std::string head = "{";
  int64_t off = 0;
  for (const SavedTensor& o : out.tensors) {
    head += "\"" + json_escape(o.name) + "\":{\"dtype\":\"" + o.dtype + "\",\"shape\":[";
    for (size_t d = 0; d < o.shape.size(); ++d) head += (d ? "," : "") + std::to_string(o.shape[d]);
    head += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + o.bytes) + "]},";
    off += o.bytes;
  }
  const std::string linears = "{\"tied\":" + std::string(tied ? "true" : "false") + (out.desc.empty() ? "" : ",") + out.desc + "}";
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
  e = write_bytes(f, len, 8);
  if (e.ok()) e = write_bytes(f, head.data(), head.size());
  try {
    for (const SavedTensor& o : out.tensors) {
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
