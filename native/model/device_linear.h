// device_linear.h - a linear weight on a CUDA device: uploaded once from any
// CPU format (linear_format.h) in the form its row names (f32 rows; int8 rows
// with group scales, int4 included; sparse as CSR or N:M), and run by the CUDA
// kernel library (sparq/cuda.h). In a build without CUDA every call fails with
// the reason.
#pragma once
#include <cstdint>
#include <memory>

#include "linear_format.h"
#include "sparq/cuda.h"

namespace sparq {

// One linear weight [n, k] on the device.
struct DeviceLinear {
  enum class Kind { f32, s8, csr, nm } kind = Kind::f32;
  int64_t n = 0, k = 0;
  float act_scale = 0.f;  // s8: static activation scale (0: dynamic per row)
  const float* f32 = nullptr;
  cuda::DeviceS8 s8;
  cuda::DeviceCsr csr;
  cuda::DeviceNm nm;
  cuda::DeviceBuffers mem;
  size_t scratch_bytes(int64_t m) const { return kind == Kind::s8 ? cuda::scratch_bytes_linear_s8(m, s8.k_pad) : 0; }
};

// Uploads any format through its row's device form: int8 packed (symmetric) and
// int4 as int8 values with the same group scales; f32 rows (GGUF blocks as their
// exact f32 values); sparse (bitmask goes up as CSR).
Error upload_linear(cuda::Context* ctx, const LinearWeight& w, std::unique_ptr<DeviceLinear>* out);
// y[m, n] = x . W^T (+ bias); scratch: w.scratch_bytes(m) bytes of device memory.
Error run_linear(cuda::Context* ctx, const DeviceLinear& w, const float* x, int64_t m, const float* bias, void* scratch,
                 float* y);

}  // namespace sparq
