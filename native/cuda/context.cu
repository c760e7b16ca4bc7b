// context.cu - the CUDA runtime probe, contexts (device + stream) and device
// memory. Linked with cudart_static: on a machine without a driver or GPU
// every call fails softly with the runtime's reason and the CPU paths keep
// working.
#include <atomic>

#include "common.cuh"

#ifndef SPARQ_CUDA_ARCHS
#define SPARQ_CUDA_ARCHS ""
#endif

namespace sparq {

CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  info.archs = SPARQ_CUDA_ARCHS;
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    info.devices = 0;
    info.error = cudaGetErrorString(e);
    cudaGetLastError();
  } else {
    info.devices = n;
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp p;
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
      CudaDevice d;
      d.name = p.name;
      d.major = p.major;
      d.minor = p.minor;
      d.sms = p.multiProcessorCount;
      d.memory_bytes = double(p.totalGlobalMem);
      int clock_khz = 0, bus_bits = 0, mem_khz = 0;
      cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, i);
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, i);
      cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, i);
      d.clock_mhz = clock_khz / 1000.0;
      // DDR: two transfers per clock
      d.bandwidth_gbs = 2.0 * double(mem_khz) * 1e3 * (bus_bits / 8.0) / 1e9;
      info.device_list.push_back(d);
    }
    cudaGetLastError();
  }
  return info;
}

namespace cuda {

static std::atomic<int64_t> g_device_bytes{0};

Error context_create(int device, Context** out) {
  *out = nullptr;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return cuda_error(e, "no CUDA device");
  if (device < 0 || device >= n)
    return bad_arg("device " + std::to_string(device) + " does not exist (" + std::to_string(n) + " found)");
  e = cudaSetDevice(device);
  if (e != cudaSuccess) return cuda_error(e, "cudaSetDevice");
  Context* c = new (std::nothrow) Context;
  if (!c) return Error::make(Status::out_of_memory, "cuda: out of host memory");
  c->device = device;
  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
  c->pools = pools != 0;
  cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, device);
  e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    delete c;
    return cuda_error(e, "cudaStreamCreate");
  }
  *out = c;
  return {};
}

void context_destroy(Context* ctx) {
  if (!ctx) return;
  if (cudaSetDevice(ctx->device) == cudaSuccess && ctx->stream) {
    cudaStreamSynchronize(ctx->stream);
    cudaStreamDestroy(ctx->stream);
  }
  cudaGetLastError();
  delete ctx;
}

int context_device(const Context* ctx) { return ctx ? ctx->device : -1; }

void context_set_blocking(Context* ctx, bool blocking) {
  if (ctx) ctx->blocking = blocking;
}

Error synchronize(Context* ctx) {
  SPARQ_CUDA_ENTER(ctx);
  const cudaError_t e = cudaStreamSynchronize(ctx->stream);
  return e == cudaSuccess ? Error{} : cuda_error(e, "synchronize");
}

Error device_alloc(Context* ctx, size_t bytes, void** out) {
  *out = nullptr;
  SPARQ_CUDA_ENTER(ctx);
  if (bytes == 0) bytes = 1;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && bytes > free_b)
    return Error::make(Status::out_of_memory, "cuda: cannot allocate " + std::to_string(bytes) + " bytes on device " +
                                                  std::to_string(ctx->device) + " (" + std::to_string(free_b) +
                                                  " free of " + std::to_string(total_b) + ")");
  const cudaError_t e = ctx->pools ? cudaMallocAsync(out, bytes, ctx->stream) : cudaMalloc(out, bytes);
  if (e != cudaSuccess) {
    *out = nullptr;
    return cuda_error(e, ("allocating " + std::to_string(bytes) + " bytes of device memory").c_str());
  }
  g_device_bytes.fetch_add(int64_t(bytes));
  return {};
}

void device_free(Context* ctx, void* p, size_t bytes) {
  if (!p) return;
  // stream-ordered: released once the work queued before it is done
  if (ctx && ctx->pools && cudaSetDevice(ctx->device) == cudaSuccess) cudaFreeAsync(p, ctx->stream);
  else cudaFree(p);  // synchronises with work still using p
  cudaGetLastError();
  g_device_bytes.fetch_sub(int64_t(bytes == 0 ? 1 : bytes));
}

int64_t device_allocated_bytes() { return g_device_bytes.load(); }

Error mem_info(Context* ctx, size_t* free_bytes, size_t* total_bytes) {
  SPARQ_CUDA_ENTER(ctx);
  const cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
  return e == cudaSuccess ? Error{} : cuda_error(e, "cudaMemGetInfo");
}

static Error copy(Context* ctx, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const char* what) {
  SPARQ_CUDA_ENTER(ctx);
  if (bytes == 0) return {};
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, ctx->stream);
  if (e != cudaSuccess) return cuda_error(e, what);
  // Copies always wait: the host buffer may be reused as soon as they return.
  e = cudaStreamSynchronize(ctx->stream);
  return e == cudaSuccess ? Error{} : cuda_error(e, what);
}

Error copy_h2d(Context* ctx, void* dst, const void* src, size_t bytes) {
  return copy(ctx, dst, src, bytes, cudaMemcpyHostToDevice, "copy to device");
}
Error copy_d2h(Context* ctx, void* dst, const void* src, size_t bytes) {
  return copy(ctx, dst, src, bytes, cudaMemcpyDeviceToHost, "copy to host");
}
Error copy_d2d(Context* ctx, void* dst, const void* src, size_t bytes) {
  return copy(ctx, dst, src, bytes, cudaMemcpyDeviceToDevice, "copy on device");
}

Error memset_zero(Context* ctx, void* dst, size_t bytes) {
  SPARQ_CUDA_ENTER(ctx);
  if (bytes == 0) return {};
  const cudaError_t e = cudaMemsetAsync(dst, 0, bytes, ctx->stream);
  return e == cudaSuccess ? Error{} : cuda_error(e, "memset");
}

Error copy_2d(Context* ctx, void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
  SPARQ_CUDA_ENTER(ctx);
  if (!width || !height) return {};
  const cudaError_t e = cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, ctx->stream);
  if (e != cudaSuccess) return cuda_error(e, "copy_2d");
  return finish(ctx, "copy_2d");
}

Error DeviceBuffers::alloc(Context* ctx, size_t bytes, void** out) {
  if (ctx_ && ctx_ != ctx) return Error::make(Status::internal, "cuda: one DeviceBuffers set per context");
  if (Error e = device_alloc(ctx, bytes, out); !e.ok()) return e;
  ctx_ = ctx;
  v_.emplace_back(*out, bytes);
  bytes_ += bytes;
  return {};
}

Error DeviceBuffers::upload(Context* ctx, const void* host, size_t bytes, void** out) {
  if (Error e = alloc(ctx, bytes, out); !e.ok()) return e;
  return bytes ? copy_h2d(ctx, *out, host, bytes) : Error{};
}

void DeviceBuffers::release() {
  for (auto& p : v_) device_free(ctx_, p.first, p.second);
  v_.clear();
  bytes_ = 0;
}

}  // namespace cuda
}  // namespace sparq
