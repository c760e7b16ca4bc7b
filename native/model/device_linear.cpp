// device_linear.cpp - weights on a CUDA device: uploads in the form each CPU
// format's row (linear_format.h) names - f32 rows, int8 rows with group scales,
// sparse - and the one entry that runs any of them (the CUDA kernel library's
// ops, sparq/cuda.h).
#include "device_linear.h"

#include <cstring>
#include <new>
#include <vector>

#include "../cpu/sparse.h"

namespace sparq {

// int8 values [n, k] + scales [n, groups] -> DeviceS8 with rows padded to 64.
static Error upload_s8_rows(cuda::Context* ctx, const int8_t* q, const float* scales, int64_t n, int64_t k,
                            int64_t group, int64_t groups, DeviceLinear* d) {
  const int64_t k_pad = round_up(k, 64);
  std::vector<int8_t> rows;
  try {
    rows.assign(size_t(n * k_pad), 0);
  } catch (...) {
    return Error::make(Status::out_of_memory, "cuda: out of host memory staging a weight");
  }
  for (int64_t j = 0; j < n; ++j) std::memcpy(rows.data() + j * k_pad, q + j * k, size_t(k));
  void *pv = nullptr, *ps = nullptr;
  if (Error e = d->mem.upload(ctx, rows.data(), rows.size(), &pv); !e.ok()) return e;
  if (Error e = d->mem.upload(ctx, scales, size_t(n * groups) * 4, &ps); !e.ok()) return e;
  d->kind = DeviceLinear::Kind::s8;
  d->s8.n = n;
  d->s8.k = k;
  d->s8.k_pad = k_pad;
  d->s8.group = groups > 1 ? group : 0;
  d->s8.groups = groups;
  d->s8.values = static_cast<int8_t*>(pv);
  d->s8.scales = static_cast<float*>(ps);
  return {};
}

static Error upload_sparse(cuda::Context* ctx, const SparseWeight& w, std::unique_ptr<DeviceLinear>* out) {
  if (w.int4) return Error::make(Status::unsupported, "cuda: sparse weights with int4 values run on the CPU only (quantize the sparse weight to int8 for the GPU)");
  std::unique_ptr<DeviceLinear> d(new (std::nothrow) DeviceLinear);
  if (!d) return Error::make(Status::out_of_memory, "cuda: out of host memory");
  d->n = w.n;
  d->k = w.k;
  void* p = nullptr;
  if (w.int8) {
    if (Error e = d->mem.upload(ctx, w.scale.data(), w.scale.size() * 4, &p); !e.ok()) return e;
    d->csr.scale = d->nm.scale = static_cast<float*>(p);
  }
  if (w.format == SparseFormat::nm) {
    cuda::DeviceNm& nm = d->nm;
    nm.n = w.n;
    nm.k = w.k;
    nm.groups = w.groups();
    nm.row_bytes = w.idx_row_bytes();
    nm.N = w.N;
    nm.M = w.M;
    nm.bits = w.idx_bits();
    if (Error e = d->mem.upload(ctx, w.idx.data(), w.idx.size(), &p); !e.ok()) return e;
    nm.idx = static_cast<uint8_t*>(p);
    if (w.int8) {
      if (Error e = d->mem.upload(ctx, w.vq.data(), w.vq.size(), &p); !e.ok()) return e;
      nm.vq = static_cast<int8_t*>(p);
    } else {
      if (Error e = d->mem.upload(ctx, w.vf.data(), w.vf.size() * 4, &p); !e.ok()) return e;
      nm.vf = static_cast<float*>(p);
    }
    d->kind = DeviceLinear::Kind::nm;
    *out = std::move(d);
    return {};
  }
  // csr, and bitmask as csr: row pointers and columns as int32
  if (w.nnz > 0x7fffffff) return Error::make(Status::unsupported, "cuda: over 2^31 nonzeros in one weight");
  std::vector<int32_t> rp(size_t(w.n + 1)), col(size_t(w.nnz > 0 ? w.nnz : 1));
  for (int64_t j = 0; j <= w.n; ++j) rp[size_t(j)] = int32_t(w.row_ptr[size_t(j)]);
  if (w.format == SparseFormat::csr) {
    for (int64_t q = 0; q < w.nnz; ++q) col[size_t(q)] = int32_t(w.column(q));
  } else {
    const int64_t words = w.words();
    for (int64_t j = 0; j < w.n; ++j) {
      int64_t q = w.row_ptr[size_t(j)];
      for (int64_t wd = 0; wd < words; ++wd) {
        uint32_t bits = w.mask[size_t(j * words + wd)];
        while (bits) {
          col[size_t(q++)] = int32_t(wd * 32 + __builtin_ctz(bits));
          bits &= bits - 1;
        }
      }
    }
  }
  cuda::DeviceCsr& c = d->csr;
  c.n = w.n;
  c.k = w.k;
  c.nnz = w.nnz;
  if (Error e = d->mem.upload(ctx, rp.data(), rp.size() * 4, &p); !e.ok()) return e;
  c.row_ptr = static_cast<int32_t*>(p);
  if (Error e = d->mem.upload(ctx, col.data(), col.size() * 4, &p); !e.ok()) return e;
  c.col = static_cast<int32_t*>(p);
  if (w.int8) {
    if (Error e = d->mem.upload(ctx, w.vq.data(), w.vq.size() ? w.vq.size() : 1, &p); !e.ok()) return e;
    c.vq = static_cast<int8_t*>(p);
  } else {
    if (Error e = d->mem.upload(ctx, w.vf.data(), (w.vf.size() ? w.vf.size() : 1) * 4, &p); !e.ok()) return e;
    c.vf = static_cast<float*>(p);
  }
  d->kind = DeviceLinear::Kind::csr;
  *out = std::move(d);
  return {};
}

// Through the format's device form: f32 rows, int8 rows + scales, or sparse arrays.
Error upload_linear(cuda::Context* ctx, const LinearWeight& w, std::unique_ptr<DeviceLinear>* out) {
  if (!w.present()) return Error::make(Status::invalid_argument, "cuda: linear weight has no data");
  const LinearFormat& f = *w.format;
  if (f.device == DeviceForm::sparse) return upload_sparse(ctx, w.as<SparseWeight>(), out);
  std::unique_ptr<DeviceLinear> d(new (std::nothrow) DeviceLinear);
  if (!d) return Error::make(Status::out_of_memory, "cuda: out of host memory");
  d->n = w.n;
  d->k = w.k;
  if (f.device == DeviceForm::s8) {
    S8Rows r;
    if (Error e = f.device_s8(w, &r); !e.ok()) return e;
    if (Error e = upload_s8_rows(ctx, r.q.data(), r.scales.data(), w.n, w.k, r.group, r.groups, d.get()); !e.ok()) return e;
    d->act_scale = w.act_scale;
    *out = std::move(d);
    return {};
  }
  std::vector<float> staging;
  const float* rows = nullptr;
  if (Error e = f.device_f32(w, &staging, &rows); !e.ok()) return e;
  void* p = nullptr;
  if (Error e = d->mem.upload(ctx, rows, size_t(w.n * w.k) * 4, &p); !e.ok()) return e;
  d->f32 = static_cast<float*>(p);
  d->kind = DeviceLinear::Kind::f32;
  *out = std::move(d);
  return {};
}

Error run_linear(cuda::Context* ctx, const DeviceLinear& w, const float* x, int64_t m, const float* bias, void* scratch,
                 float* y) {
  switch (w.kind) {
    case DeviceLinear::Kind::s8: return cuda::linear_s8(ctx, x, m, w.s8, bias, w.act_scale, scratch, y);
    case DeviceLinear::Kind::csr: return cuda::spmm_csr(ctx, w.csr, x, m, bias, y);
    case DeviceLinear::Kind::nm: return cuda::spmm_nm(ctx, w.nm, x, m, bias, y);
    default: return cuda::linear_f32(ctx, x, m, w.k, w.f32, w.n, bias, y);
  }
}

}  // namespace sparq
