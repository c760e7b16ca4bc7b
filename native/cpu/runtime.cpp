// runtime.cpp - runtime information, ISA/thread controls and the small
// calibration helpers (min/max, histogram) used by the observers.
#include <cmath>

#include "dispatch.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

RuntimeInfo runtime_info() {
  RuntimeInfo r;
  const KernelTable& t = kernels();
  const CpuFeatures& f = cpu_features();
  r.isa = isa_name(t.isa);
  r.sgemm = t.sgemm_name;
  r.quant = t.isa == Isa::ref ? "ref" : "avx2";
  r.attention = t.attn_name;
  r.sparse = t.sparse_name;
  r.features = f.names();
  r.vendor = f.vendor;
  r.brand = f.brand;
  r.dispatch_error = dispatch_error();
  if (r.dispatch_error.empty()) r.dispatch_error = threads_env_error();
  r.threads = num_threads();
  r.physical_cores = physical_cores();
  for (int i = 0; i <= int(Isa::amx); ++i)
    if (isa_supported(Isa(i))) {
      r.supported_isas.emplace_back(isa_name(Isa(i)));
      if (isa_emulated(Isa(i))) r.emulated_isas.emplace_back(isa_name(Isa(i)));
    }
  return r;
}

Error set_isa(const std::string& name) {
  Isa isa;
  if (!parse_isa(name, &isa))
    return Error::make(Status::invalid_argument, "unknown ISA '" + name + "': expected ref, avx2, avxvnni, avx512vnni or amx");
  std::string why;
  if (!set_isa(isa, &why)) return Error::make(Status::unsupported, "ISA " + name + " cannot run here: " + why);
  return Error{};
}

void set_threads(int n) { set_num_threads(n); }

void minmax_f32(const float* x, int64_t count, float* mn, float* mx) {
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < count; ++i) {
    const float v = x[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  *mn = lo;
  *mx = hi;
}

void histogram_f32(const float* x, int64_t count, float lo, float hi, int64_t bins, double* counts) {
  for (int64_t b = 0; b < bins; ++b) counts[b] = 0;
  const double width = (double(hi) - double(lo)) / double(bins);
  for (int64_t i = 0; i < count; ++i) {
    const float v = x[i];
    if (std::isnan(v)) continue;
    // clamped as a double, then converted (an infinite or huge value is never cast out of range)
    const double t = width > 0 ? (double(v) - lo) / width : 0.0;
    const int64_t b = t > 0 ? (t < double(bins - 1) ? int64_t(t) : bins - 1) : 0;
    counts[b] += 1;
  }
}

}  // namespace sparq

#if !(defined(__x86_64__) || defined(_M_X64))
namespace sparq {
Ceilings measure_ceilings(int64_t) {
  Ceilings c;
  c.threads = num_threads();
  return c;
}
}  // namespace sparq
#endif
