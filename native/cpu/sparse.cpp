// sparse.cpp - building the sparse formats from dense weights and the spmm
// driver (the scalar reference kernels: ref/sparse_ref.cpp) (rows of W split over the pool;
// m <= 8 reads W once per call, larger m works on x transposed so that each
// nonzero updates a contiguous run of m outputs).
#include "sparse.h"

#include <cassert>
#include <algorithm>
#include <cmath>
#include <cstring>

#include "dispatch.h"
#include "half.h"
#include "scratch.h"
#include "thread_pool.h"

namespace sparq {

size_t SparseWeight::bytes() const {
  return row_ptr.size() * 8 + col.size() * 4 + col16.size() * 2 + mask.size() * 4 + idx.size() + vf.size() * 4 + vq.size() + scale.size() * 4 +
         v4.size() + scale4.size() * 2;
}

namespace {

// int4 nibbles
void set4(SparseWeight& s, int64_t p, int v) {
  uint8_t& b = s.v4[size_t(p / 2)];
  const int sh = int(p % 2) * 4;
  b = uint8_t((b & ~(15 << sh)) | ((v + 8) << sh));
}
void swap4(SparseWeight& s, int64_t p, int64_t q) {
  const int a = s.value4(p);
  set4(s, p, s.value4(q));
  set4(s, q, a);
}

// N:M: each group's (index, value) pairs put in ascending index order (sparse.h).
void sort_nm_groups(SparseWeight& s) {
  const int N = s.N, b = s.idx_bits();
  const int64_t per = s.groups() * N, rb = s.idx_row_bytes();
  for (int64_t j = 0; j < s.n; ++j)
    for (int64_t g = 0; g < s.groups(); ++g) {
      const int64_t q0 = g * N;
      int ix[16];
      for (int c = 0; c < N; ++c) ix[c] = s.nm_index(j, q0 + c);
      for (int c = 1; c < N; ++c)  // insertion sort of the pairs (N <= 8)
        for (int d = c; d > 0 && ix[d - 1] > ix[d]; --d) {
          std::swap(ix[d - 1], ix[d]);
          const size_t p = size_t(j * per + q0 + d);
          if (s.int8) std::swap(s.vq[p - 1], s.vq[p]);
          else if (s.int4) swap4(s, p - 1, p);
          else std::swap(s.vf[p - 1], s.vf[p]);
        }
      for (int c = 0; c < N; ++c) {
        const int64_t bit = (q0 + c) * b;
        uint8_t& byte = s.idx[size_t(j * rb + bit / 8)];
        const int sh = int(bit % 8), mk = (1 << b) - 1;
        byte = uint8_t((byte & ~(mk << sh)) | (ix[c] << sh));
      }
    }
}

Error bad(const std::string& m) { return Error::make(Status::invalid_argument, "sparse: " + m); }

}  // namespace

const char* sparse_format_name(SparseFormat f) {
  switch (f) {
    case SparseFormat::csr: return "csr";
    case SparseFormat::bitmask: return "bitmask";
    case SparseFormat::nm: return "nm";
  }
  return "?";
}

bool parse_sparse_format(const std::string& name, SparseFormat* out) {
  for (SparseFormat f : kSparseFormats)
    if (name == sparse_format_name(f)) {
      *out = f;
      return true;
    }
  return false;
}

Error sparse_from_dense(const float* w, int64_t n, int64_t k, SparseFormat f, int N, int M, bool int8,
                        std::unique_ptr<SparseWeight>* out) {
  if (n < 1 || k < 1) return bad("shape must be at least [1, 1]");
  if (f == SparseFormat::nm && !(M >= 2 && M <= 16 && N >= 1 && N < M && !(N & (N - 1)) && !(M & (M - 1))))
    return bad("N:M needs powers of two 1 <= N < M <= 16 (2:4, 4:8, ...)");
  if (f == SparseFormat::csr && n * k >= (int64_t(1) << 31)) return bad("csr is limited to 2^31 weights (use bitmask)");
  auto s = std::make_unique<SparseWeight>();
  s->format = f;
  s->n = n;
  s->k = k;
  s->N = f == SparseFormat::nm ? N : 0;
  s->M = f == SparseFormat::nm ? M : 0;
  try {
    WeightVector<float> vals;  // f32 values in storage order
    if (f == SparseFormat::nm) {
      const int64_t g = s->groups(), per = g * N;
      vals.assign(size_t(n * per), 0.f);
      const int64_t rb = s->idx_row_bytes();
      const int bits = s->idx_bits();
      s->idx.assign(size_t(n * rb + kSparseIdxPad), 0);  // readable bytes past the end for vector loads
      std::vector<uint8_t> ri(static_cast<size_t>(per));  // one row's indices, then packed
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t gi = 0; gi < g; ++gi) {
          int c = 0;
          for (int t = 0; t < M && gi * M + t < k; ++t) {
            const float v = w[j * k + gi * M + t];
            if (v == 0.f) continue;
            if (c == N)
              return bad("row " + std::to_string(j) + ", group " + std::to_string(gi) + " has more than " + std::to_string(N) +
                         " nonzeros (not " + std::to_string(N) + ":" + std::to_string(M) + ")");
            vals[size_t(j * per + gi * N + c)] = v;
            ri[size_t(gi * N + c)] = uint8_t(t);
            ++c;
          }
          // pad with explicit zeros at unused in-group positions
          for (int t = 0; c < N; ++t) {
            bool used = false;
            for (int u = 0; u < c; ++u) used |= ri[size_t(gi * N + u)] == t;
            if (!used) ri[size_t(gi * N + c++)] = uint8_t(t);
          }
        }
        for (int64_t q = 0; q < per; ++q) s->idx[size_t(j * rb + q * bits / 8)] |= uint8_t(ri[size_t(q)] << (q * bits % 8));
      }
    } else {
      s->row_ptr.assign(size_t(n + 1), 0);
      s->narrow = f == SparseFormat::csr && k <= 65536;
      if (f == SparseFormat::bitmask) s->mask.assign(size_t(n * s->words()), 0u);
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t c = 0; c < k; ++c) {
          const float v = w[j * k + c];
          if (v == 0.f) continue;
          vals.push_back(v);
          if (f == SparseFormat::csr && s->narrow) s->col16.push_back(uint16_t(c));
          else if (f == SparseFormat::csr) s->col.push_back(int32_t(c));
          else s->mask[size_t(j * s->words() + c / 32)] |= 1u << (c % 32);
        }
        s->row_ptr[size_t(j + 1)] = int64_t(vals.size());
      }
    }
    s->nnz = int64_t(vals.size());
    s->vf = std::move(vals);
    // 8 readable values past the end: vector kernels load whole groups of 8
    s->vf.resize(s->vf.size() + 8, 0.f);
    if (s->narrow) s->col16.resize(s->col16.size() + 8, 0);  // vector loads of 8 columns
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "sparse: out of memory");
  }
  if (f == SparseFormat::nm) sort_nm_groups(*s);
  if (int8) return sparse_quantize(*s, out);
  *out = std::move(s);
  return Error{};
}

void sparse_pack4(const int8_t* v, int64_t cnt, uint8_t* out) {
  for (int64_t p = 0; p + 1 < cnt; p += 2) out[p / 2] = uint8_t((v[p] + 8) | (v[p + 1] + 8) << 4);
  if (cnt % 2) out[cnt / 2] = uint8_t((v[cnt - 1] + 8) | 8 << 4);
}

Error sparse_quantize4(const SparseWeight& s, int64_t group, std::unique_ptr<SparseWeight>* out) {
  if (s.quantized()) return bad("the weight is already quantized");
  if (s.format == SparseFormat::csr) return bad("int4 values need the bitmask or nm format (csr spends 2-4 bytes on each value's column)");
  if (group != 32 && group != 64 && group != 128) return bad("the int4 group must be 32, 64 or 128 columns");
  if (s.format == SparseFormat::nm && group % s.M) return bad("the int4 group must be a multiple of M");
  try {
    auto q = std::make_unique<SparseWeight>(s);
    q->int4 = true;
    q->group = group;
    q->vf.clear();
    q->vf.shrink_to_fit();
    const int64_t G = q->qgroups();
    q->scale4.assign(size_t(s.n * G), 0);
    std::vector<int8_t> vals(size_t(s.nnz), 0);
    std::vector<float> mx(static_cast<size_t>(G)), inv(static_cast<size_t>(G));
    for (int64_t j = 0; j < s.n; ++j) {
      std::fill(mx.begin(), mx.end(), 0.f);
      int64_t p = s.row_begin(j);
      sparse_for_row(s, j, [&](int64_t c, float v) {
        if (c < s.k) mx[size_t(c / group)] = std::max(mx[size_t(c / group)], std::fabs(v));
      });
      for (int64_t g = 0; g < G; ++g) {
        const uint16_t h = float_to_half(mx[size_t(g)] / 7.f);
        q->scale4[size_t(j * G + g)] = h;
        const float sc = half_to_float(h);
        inv[size_t(g)] = sc > 0.f ? 1.f / sc : 0.f;
      }
      sparse_for_row(s, j, [&](int64_t c, float v) {
        const float r = c < s.k ? std::nearbyint(v * inv[size_t(c / group)]) : 0.f;
        vals[size_t(p++)] = int8_t(r > 7.f ? 7.f : r < -7.f ? -7.f : r == r ? r : 0.f);
      });
    }
    q->v4.assign(size_t((s.nnz + 1) / 2 + kSparseI8Pad), 0x88);  // vector loads past the last row stay inside
    sparse_pack4(vals.data(), s.nnz, q->v4.data());
    *out = std::move(q);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "sparse: out of memory");
  }
  return Error{};
}

Error sparse_quantize(const SparseWeight& s, std::unique_ptr<SparseWeight>* out) {
  if (s.quantized()) return bad("the weight is already quantized");
  try {
    auto q = std::make_unique<SparseWeight>(s);
    q->int8 = true;
    q->vf.clear();
    q->vf.shrink_to_fit();
    q->vq.assign(size_t(s.nnz + kSparseI8Pad), 0);  // vector loads past the last row stay inside
    q->scale.assign(size_t(s.n), 1.f);
    for (int64_t j = 0; j < s.n; ++j) {
      const int64_t b = s.format == SparseFormat::nm ? j * s.groups() * s.N : s.row_ptr[size_t(j)];
      const int64_t e = s.format == SparseFormat::nm ? b + s.groups() * s.N : s.row_ptr[size_t(j + 1)];
      float mx = 0.f;
      for (int64_t p = b; p < e; ++p) mx = std::max(mx, std::fabs(s.vf[size_t(p)]));
      const float sc = mx > 0.f ? mx / 127.f : 1.f, inv = 1.f / sc;
      q->scale[size_t(j)] = sc;
      for (int64_t p = b; p < e; ++p) {
        const float v = std::nearbyint(s.vf[size_t(p)] * inv);
        q->vq[size_t(p)] = int8_t(v > 127.f ? 127.f : v < -127.f ? -127.f : v == v ? v : 0.f);
      }
    }
    *out = std::move(q);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "sparse: out of memory");
  }
  return Error{};
}

Error sparse_from_parts(const SparseParts& p, std::unique_ptr<SparseWeight>* out) {
  if (p.n < 1 || p.k < 1 || p.nnz < 0 || p.n > (int64_t(1) << 31) || p.k > (int64_t(1) << 31)) return bad("bad shape or count");
  if (!p.values || (p.int8 && !p.scale) || (p.int4 && !p.scale4)) return bad("values (and int8 / int4 scales) are required");
  if (p.int8 && p.int4) return bad("values are int8 or int4, not both");
  if (p.int4 && p.format == SparseFormat::csr) return bad("int4 values need the bitmask or nm format");
  if (p.int4 && !(p.group == 32 || p.group == 64 || p.group == 128)) return bad("the int4 group must be 32, 64 or 128 columns");
  if (p.int4 && p.format == SparseFormat::nm && p.M > 0 && p.group % p.M) return bad("the int4 group must be a multiple of M");
  auto s = std::make_unique<SparseWeight>();
  s->format = p.format;
  s->n = p.n;
  s->k = p.k;
  s->nnz = p.nnz;
  s->int8 = p.int8;
  s->int4 = p.int4;
  s->group = p.int4 ? p.group : 0;
  try {
    if (p.format == SparseFormat::nm) {
      if (!(p.M >= 2 && p.M <= 16 && p.N >= 1 && p.N < p.M && !(p.N & (p.N - 1)) && !(p.M & (p.M - 1))) || !p.idx)
        return bad("N:M needs powers of two 1 <= N < M <= 16 and indices");
      s->N = p.N;
      s->M = p.M;
      if (p.nnz != p.n * s->groups() * p.N) return bad("N:M value count does not match n x groups x N");
      s->idx.assign(p.idx, p.idx + p.n * s->idx_row_bytes());
      s->idx.resize(s->idx.size() + kSparseIdxPad, 0);
      const int64_t per = s->groups() * p.N;
      for (int64_t j = 0; j < p.n; ++j)
        for (int64_t q = 0; q < per; ++q) {
          if (s->nm_index(j, q) >= p.M) return bad("N:M index " + std::to_string(s->nm_index(j, q)) + " is not below M");
          for (int64_t u = q - q % p.N; u < q; ++u)
            if (s->nm_index(j, u) == s->nm_index(j, q)) return bad("N:M indices repeat within a group");
        }
    } else {
      if (!p.row_ptr) return bad("row pointers are required");
      // copied first: the checks (and later ones) look at what the weight keeps
      s->row_ptr.assign(p.row_ptr, p.row_ptr + p.n + 1);
      const std::vector<int64_t>& rp = s->row_ptr;
      if (rp[0] != 0 || rp[size_t(p.n)] != p.nnz) return bad("row pointers must start at 0 and end at the value count");
      for (int64_t j = 0; j < p.n; ++j)
        if (rp[size_t(j + 1)] < rp[size_t(j)]) return bad("row pointers must not decrease");
    }
    if (p.format == SparseFormat::csr) {
      if (!p.col) return bad("csr needs columns");
      if (p.narrow && p.k > 65536) return bad("uint16 columns need k <= 65536");
      s->narrow = p.narrow;
      if (p.narrow) {
        const uint16_t* c = static_cast<const uint16_t*>(p.col);
        s->col16.assign(c, c + p.nnz);
        s->col16.resize(size_t(p.nnz + 8), 0);
      } else {
        const int32_t* c = static_cast<const int32_t*>(p.col);
        s->col.assign(c, c + p.nnz);
      }
      for (int64_t q = 0; q < p.nnz; ++q)
        if (s->column(q) < 0 || s->column(q) >= p.k) return bad("column " + std::to_string(s->column(q)) + " is outside [0, k)");
      for (int64_t j = 0; j < p.n; ++j)
        for (int64_t q = s->row_ptr[size_t(j)] + 1; q < s->row_ptr[size_t(j + 1)]; ++q)
          if (s->column(q) <= s->column(q - 1)) return bad("row " + std::to_string(j) + ": columns must increase");
    }
    if (p.format == SparseFormat::bitmask) {
      if (!p.mask) return bad("bitmask needs the mask");
      const int64_t words = s->words();
      s->mask.assign(p.mask, p.mask + p.n * words);
      const uint32_t tail = p.k % 32 ? ~((1u << (p.k % 32)) - 1) : 0u;
      for (int64_t j = 0; j < p.n; ++j) {
        int64_t cnt = 0;
        for (int64_t w = 0; w < words; ++w) cnt += __builtin_popcount(s->mask[size_t(j * words + w)]);
        if (cnt != s->row_ptr[size_t(j + 1)] - s->row_ptr[size_t(j)]) return bad("row " + std::to_string(j) + ": mask bits do not match its value count");
        if (s->mask[size_t(j * words + words - 1)] & tail) return bad("row " + std::to_string(j) + ": mask bits past k");
      }
    }
    if (p.int8) {
      const int8_t* v = static_cast<const int8_t*>(p.values);
      s->vq.assign(v, v + p.nnz);
      s->vq.resize(size_t(p.nnz + kSparseI8Pad), 0);
      for (int64_t q = 0; q < p.nnz; ++q)
        if (s->vq[size_t(q)] == -128) return bad("int8 values must be in [-127, 127]");
      s->scale.assign(p.scale, p.scale + p.n);
      for (float sc : s->scale)
        if (!(std::isfinite(sc) && sc >= 0.f)) return bad("int8 row scales must be finite and >= 0");
    } else if (p.int4) {
      const uint8_t* v = static_cast<const uint8_t*>(p.values);
      s->v4.assign(v, v + (p.nnz + 1) / 2);
      if (p.nnz % 2) s->v4.back() = uint8_t((s->v4.back() & 15) | 8 << 4);  // the unused high nibble
      s->v4.resize(size_t((p.nnz + 1) / 2 + kSparseI8Pad), 0x88);
      for (int64_t q = 0; q < p.nnz; ++q)
        if (s->value4(q) == -8) return bad("int4 values must be in [-7, 7] (a 0 nibble)");
      s->scale4.assign(p.scale4, p.scale4 + p.n * s->qgroups());
      for (uint16_t h : s->scale4)
        if ((h & 0x7c00) == 0x7c00 || (h & 0x8000 && h != 0x8000)) return bad("int4 scales must be finite and >= 0");
    } else {
      const float* v = static_cast<const float*>(p.values);
      s->vf.assign(v, v + p.nnz);
      s->vf.resize(size_t(p.nnz + 8), 0.f);
    }
    if (p.format == SparseFormat::nm)  // padding past k (a partial last group) must hold zeros
      for (int64_t q = 0; q < p.nnz; ++q) {
        const int64_t per = s->groups() * p.N, c = (q % per) / p.N * p.M + s->nm_index(q / per, q % per);
        const bool nz = p.int8 ? s->vq[size_t(q)] != 0 : p.int4 ? s->value4(q) != 0 : s->vf[size_t(q)] != 0.f;
        if (c >= p.k && nz) return bad("N:M padding past k holds a nonzero value");
      }
    if (p.format == SparseFormat::nm) sort_nm_groups(*s);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "sparse: out of memory");
  }
  *out = std::move(s);
  return Error{};
}

Error sparse_concat_rows(const std::vector<const SparseWeight*>& parts, std::unique_ptr<SparseWeight>* out) {
  if (parts.empty()) return bad("concat needs at least one weight");
  const SparseWeight& a = *parts[0];
  for (const SparseWeight* p : parts)
    if (p->k != a.k || p->format != a.format || p->int8 != a.int8 || p->int4 != a.int4 || p->group != a.group || p->N != a.N || p->M != a.M ||
        p->narrow != a.narrow)
      return bad("concat: every weight must have the same k, format, value type (and int4 group) and N:M pattern");
  try {
    auto s = std::make_unique<SparseWeight>();
    s->format = a.format;
    s->k = a.k;
    s->int8 = a.int8;
    s->int4 = a.int4;
    s->group = a.group;
    s->N = a.N;
    s->M = a.M;
    s->narrow = a.narrow;
    if (a.format != SparseFormat::nm) s->row_ptr.push_back(0);
    std::vector<int8_t> v4;  // int4: the values unpacked, packed again at the end (a part may end mid-byte)
    for (const SparseWeight* p : parts) {
      const int64_t base = s->nnz;
      s->n += p->n;
      s->nnz += p->nnz;
      if (p->format != SparseFormat::nm)
        for (int64_t j = 1; j <= p->n; ++j) s->row_ptr.push_back(base + p->row_ptr[size_t(j)]);
      s->col.insert(s->col.end(), p->col.begin(), p->col.end());
      if (p->narrow) s->col16.insert(s->col16.end(), p->col16.begin(), p->col16.begin() + p->nnz);
      s->mask.insert(s->mask.end(), p->mask.begin(), p->mask.end());
      if (p->format == SparseFormat::nm) s->idx.insert(s->idx.end(), p->idx.begin(), p->idx.begin() + p->n * p->idx_row_bytes());
      if (p->int8) s->vq.insert(s->vq.end(), p->vq.begin(), p->vq.begin() + p->nnz);
      else if (p->int4)
        for (int64_t q = 0; q < p->nnz; ++q) v4.push_back(int8_t(p->value4(q)));
      else s->vf.insert(s->vf.end(), p->vf.begin(), p->vf.begin() + p->nnz);
      s->scale.insert(s->scale.end(), p->scale.begin(), p->scale.end());
      s->scale4.insert(s->scale4.end(), p->scale4.begin(), p->scale4.end());
    }
    if (s->int4) {
      s->v4.assign(size_t((s->nnz + 1) / 2 + kSparseI8Pad), 0x88);
      sparse_pack4(v4.data(), s->nnz, s->v4.data());
    }
    // the same padding as a freshly built weight
    if (s->format == SparseFormat::nm) s->idx.resize(s->idx.size() + kSparseIdxPad, 0);
    if (s->narrow) s->col16.resize(s->col16.size() + 8, 0);
    if (s->int8) s->vq.resize(s->vq.size() + kSparseI8Pad, 0);
    else if (!s->int4) s->vf.resize(s->vf.size() + 8, 0.f);
    *out = std::move(s);
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "sparse: out of memory");
  }
  return Error{};
}

void sparse_to_dense(const SparseWeight& s, float* out) {
  std::fill(out, out + s.n * s.k, 0.f);
  for (int64_t j = 0; j < s.n; ++j) {
    const float sc = s.int8 ? s.scale[size_t(j)] : 1.f;
    const uint16_t* sc4 = s.scale4.data() + j * s.qgroups();
    sparse_for_row(s, j, [&](int64_t c, float v) {
      if (c < s.k) out[j * s.k + c] = s.int4 ? v * half_to_float(sc4[c / s.group]) : v * sc;
    });
  }
}

namespace {
struct SpmmScratch {
  std::vector<int8_t> xq;
  std::vector<float> xs, xt, yt;
  std::vector<int32_t> xqt;
};
ScratchCache<SpmmScratch>& spmm_scratch() {
  static auto* cache = new ScratchCache<SpmmScratch>();  // never destroyed: pool threads may outlive statics
  return *cache;
}
}  // namespace

Error spmm(const SparseWeight& s, const float* x, int64_t m, const float* bias, float* y) {
  if (m < 1) return bad("m must be at least 1");
  if (s.int8 && s.k > kSparseInt8MaxK) return bad("int8 weights need k <= " + std::to_string(kSparseInt8MaxK) + " (int32 accumulation)");
  const KernelTable t = kernels();
  if (s.int4 && m >= kSparseDenseM) {
    // prefill: rows expanded to int8 (values in [-7, 7]) with their group scales, through the dense int8 GEMM
    const SpRowFn sprow = t.sprow;
    const int64_t G = s.qgroups();
    return linear_s8_expanded(s.n, s.k, s.group, [&](int64_t j, int8_t* row, float* scales) {
      sprow(s, j, row);
      for (int64_t g = 0; g < G; ++g) scales[g] = half_to_float(s.scale4[size_t(j * G + g)]);
    }, x, m, bias, y, -7, 7);
  }
  if (s.int8 && m >= kSparseDenseM) {
    // prefill: rows expanded to int8 through the dense int8 GEMM
    const SpRowFn sprow = t.sprow;
    return linear_s8_expanded(s.n, s.k, 0, [&](int64_t j, int8_t* row, float* scale) {
      sprow(s, j, row);
      *scale = s.scale[size_t(j)];
    }, x, m, bias, y);
  }
  // rows of W per task: about 64K stored values, at least 4 tasks per thread when there is work
  const int64_t per_row = std::max<int64_t>(1, s.nnz / std::max<int64_t>(1, s.n));
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>((int64_t(1) << 16) / (per_row * std::max<int64_t>(1, std::min<int64_t>(m, 8))) + 1,
                                                              (s.n + 4 * num_threads() - 1) / (4 * num_threads())));
  const int64_t tasks = (s.n + rows - 1) / rows;
  SpArgs a;
  a.m = m;
  a.bias = bias;
  // scratch leased for the call and reused across calls (scratch.h): no allocation
  // (and first touch) per decoded token or per call
  ScratchCache<SpmmScratch>::Lease lease = spmm_scratch().take();
  if (!lease) return Error::make(Status::out_of_memory, "spmm: out of memory");
  std::vector<int8_t>& xq = lease->xq;
  std::vector<float>&xs = lease->xs, &xt = lease->xt, &yt = lease->yt;
  std::vector<int32_t>& xqt = lease->xqt;
  try {
    if (s.quantized()) {
      a.ldq = (std::max(s.words() * 32, s.k + 4) + 63) / 64 * 64;
      if (int64_t(xq.size()) < m * a.ldq) xq.resize(size_t(m * a.ldq));
      if (int64_t(xs.size()) < m) xs.resize(size_t(m));
      quantize_activations(t, x, m, s.k, a.ldq, false, xq.data(), xs.data());
      a.xq = xq.data();
      a.xs = xs.data();
    }
    if (s.int4) {  // m < 16: 8 rows at a time
      for (int64_t i0 = 0; i0 < m; i0 += 8) {
        SpArgs b = a;
        b.m = std::min<int64_t>(8, m - i0);
        b.xq = a.xq + i0 * a.ldq;
        b.xs = a.xs + i0;
        b.y = y + i0 * s.n;
        parallel_ranges(s.n, 1, rows, [&](int64_t j0, int64_t j1) { t.spmv(s, b, j0, j1); });
      }
      return Error{};
    }
    if (m <= 8) {
      a.x = x;
      a.y = y;
      // guided ranges of at least `rows` rows, as the dense GEMVs: each thread streams
      // long runs of the values and masks (tasks of `rows` rows dealt in turn broke
      // both streams every ~64 KiB)
      parallel_ranges(s.n, 1, rows, [&](int64_t j0, int64_t j1) { t.spmv(s, a, j0, j1); });
      return Error{};
    }
    if (int64_t(yt.size()) < s.n * m) yt.resize(size_t(s.n * m));
    if (s.int8) {
      if (int64_t(xqt.size()) < s.k * m) xqt.resize(size_t(s.k * m));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t c = 0; c < s.k; ++c) xqt[size_t(c * m + i)] = xq[size_t(i * a.ldq + c)];
      a.xqt = xqt.data();
    } else {
      if (int64_t(xt.size()) < s.k * m) xt.resize(size_t(s.k * m));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t c = 0; c < s.k; ++c) xt[size_t(c * m + i)] = x[i * s.k + c];
      a.x = xt.data();
    }
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "spmm: out of memory");
  }
  a.y = yt.data();
  parallel_for(tasks, [&](int64_t i) { t.spmmt(s, a, i * rows, std::min(s.n, i * rows + rows)); });
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < s.n; ++j) y[i * s.n + j] = yt[size_t(j * m + i)];
  return Error{};
}

}  // namespace sparq
