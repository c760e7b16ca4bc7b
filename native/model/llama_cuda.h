// llama_cuda.h - the Llama decoder on a CUDA device. Built from a LlamaModel's
// weights (uploaded once: f32 as f32; int8 per channel / per group and int4 as
// int8 values with their scales; sparse as CSR or N:M), it keeps its own KV
// cache in device memory and runs the whole forward pass of a chunk on the
// context's stream; only the token ids go up and the logits come back.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "llama.h"
#include "sparq/cuda.h"

namespace sparq {

// Device allocations freed together (with the running device byte count).
class DeviceBuffers {
 public:
  DeviceBuffers() = default;
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;
  ~DeviceBuffers() { release(); }
  Error alloc(cuda::Context* ctx, size_t bytes, void** out);
  // Allocates and fills from host memory.
  Error upload(cuda::Context* ctx, const void* host, size_t bytes, void** out);
  void release();
  size_t bytes() const { return bytes_; }

 private:
  cuda::Context* ctx_ = nullptr;  // the context the blocks were allocated on (outlives them)
  std::vector<std::pair<void*, size_t>> v_;
  size_t bytes_ = 0;
};

// One linear weight [n, k] on the device.
struct DeviceLinear {
  enum class Kind { f32, s8, csr, nm } kind = Kind::f32;
  int64_t n = 0, k = 0;
  float act_scale = 0.f;  // s8: static activation scale (0: dynamic per row)
  const float* f32 = nullptr;
  cuda::DeviceS8 s8;
  cuda::DeviceCsr csr;
  cuda::DeviceNm nm;
  DeviceBuffers mem;
  size_t scratch_bytes(int64_t m) const { return kind == Kind::s8 ? cuda::scratch_bytes_linear_s8(m, s8.k_pad) : 0; }
};

// Uploads any format through its row's device form: int8 packed (symmetric) and
// int4 as int8 values with the same group scales; f32 rows (GGUF blocks as their
// exact f32 values); sparse (bitmask goes up as CSR).
Error upload_linear(cuda::Context* ctx, const LinearWeight& w, std::unique_ptr<DeviceLinear>* out);
// y[m, n] = x . W^T (+ bias); scratch: w.scratch_bytes(m) bytes of device memory.
Error run_linear(cuda::Context* ctx, const DeviceLinear& w, const float* x, int64_t m, const float* bias, void* scratch,
                 float* y);

class CudaLlama {
 public:
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;
  static Error create(cuda::Context* ctx, const LlamaConfig& cfg, const LlamaWeights& w,
                      std::unique_ptr<CudaLlama>* out);
  // Positions [pos, pos + n) (token ids already checked); logits (host) of the
  // last token, or of every one when `all`.
  Error forward(const int32_t* tokens, int64_t n, int64_t pos, bool all, float* logits);
  // Device bytes held (weights + cache + activations).
  size_t device_bytes() const;
  struct Impl;

 private:
  CudaLlama() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparq
