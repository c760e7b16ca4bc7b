// cuda_stub.cpp - the CUDA API (sparq/cuda.h) in builds without CUDA: every
// call fails with the reason, so callers need no #ifdefs.
#include "sparq/cuda.h"

namespace sparq {

static const char* kNoCuda = "built without CUDA (nvcc was not found or SPARQ_CUDA=OFF)";

CudaInfo cuda_info() {
  CudaInfo info;
  info.error = kNoCuda;
  return info;
}

namespace cuda {

Error none();
Error none() { return Error::make(Status::unsupported, std::string("cuda: ") + kNoCuda); }

Error context_create(int, Context** out) { *out = nullptr; return none(); }
void context_destroy(Context*) {}
int context_device(const Context*) { return -1; }
void context_set_blocking(Context*, bool) {}
Error synchronize(Context*) { return none(); }
Error device_alloc(Context*, size_t, void** out) { *out = nullptr; return none(); }
void device_free(Context*, void*, size_t) {}
int64_t device_allocated_bytes() { return 0; }
Error mem_info(Context*, size_t*, size_t*) { return none(); }
Error copy_h2d(Context*, void*, const void*, size_t) { return none(); }
Error copy_d2h(Context*, void*, const void*, size_t) { return none(); }
Error copy_d2d(Context*, void*, const void*, size_t) { return none(); }
Error memset_zero(Context*, void*, size_t) { return none(); }
Error copy_2d(Context*, void*, size_t, const void*, size_t, size_t, size_t) { return none(); }
Error quantize_rows(Context*, const float*, int64_t, int64_t, int64_t, float, int8_t*, float*) { return none(); }
Error gemm_s8(Context*, const int8_t*, const float*, int64_t, const DeviceS8&, const float*, float*) { return none(); }
Error matmul_s8(Context*, const int8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*) { return none(); }
size_t scratch_bytes_linear_s8(int64_t, int64_t) { return 0; }
Error linear_s8(Context*, const float*, int64_t, const DeviceS8&, const float*, float, void*, float*) { return none(); }
Error linear_f32(Context*, const float*, int64_t, int64_t, const float*, int64_t, const float*, float*) { return none(); }
Error rmsnorm(Context*, const float*, const float*, int64_t, int64_t, float, float*) { return none(); }
Error softmax(Context*, const float*, int64_t, int64_t, float*) { return none(); }
Error swiglu(Context*, const float*, const float*, int64_t, float*) { return none(); }
Error add(Context*, const float*, const float*, int64_t, float*) { return none(); }
Error swiglu_rows(Context*, const float*, int64_t, int64_t, float*) { return none(); }
Error to_heads(Context*, const float*, int64_t, int64_t, int64_t, int64_t, float*) { return none(); }
Error from_heads(Context*, const float*, int64_t, int64_t, int64_t, float*) { return none(); }
Error rope(Context*, const float*, int64_t, int64_t, int64_t, int64_t, float, bool, float*, const float*) { return none(); }
size_t scratch_bytes_attention(Context*, const Attention&) { return 0; }
Error attention(Context*, const Attention&, void*, size_t) { return none(); }
Error kv_store(Context*, const float*, int64_t, int64_t, int64_t, int64_t, DType, void*, float*, int64_t, int64_t) {
  return none();
}
Error spmm_csr(Context*, const DeviceCsr&, const float*, int64_t, const float*, float*) { return none(); }
Error spmm_nm(Context*, const DeviceNm&, const float*, int64_t, const float*, float*) { return none(); }
Error embed(Context*, const float*, int64_t, const int32_t*, int64_t, float*) { return none(); }
Error bench_gemm_s8(int, int64_t, int64_t, int64_t, int64_t, int, double*) { return none(); }
Error bench_attention(int, const Attention&, int, double*) { return none(); }

Error DeviceBuffers::alloc(Context*, size_t, void** out) { *out = nullptr; return none(); }
Error DeviceBuffers::upload(Context*, const void*, size_t, void** out) { *out = nullptr; return none(); }
void DeviceBuffers::release() {
  v_.clear();
  bytes_ = 0;
  ctx_ = nullptr;
}

}  // namespace cuda

}  // namespace sparq
