// dispatch.h - CPU feature detection (cpuid + xgetbv + AMX permission) and the
// process-wide kernel table chosen once from the best ISA present or SPARQ_ISA.
#pragma once
#include <string>
#include <vector>

#include "kernels.h"

namespace sparq {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, avxvnni = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
  bool avx512bf16 = false, avx512fp16 = false, avx512vbmi2 = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  // XCR0 state enabled by the OS
  bool amx_permitted = false;                               // arch_prctl(ARCH_REQ_XCOMP_PERM) granted
  std::string vendor, brand;
  std::vector<std::string> names() const;  // usable features (CPU and OS support both)
};

const CpuFeatures& cpu_features();

// Whether this machine can run a path (CPU and OS support, AMX permission).
bool isa_supported(Isa isa, std::string* why = nullptr);
// Best supported ISA (never an emulated one).
Isa best_isa();
// Whether this build runs the path with emulated intrinsics (SPARQ_EMULATED_ISA builds).
bool isa_emulated(Isa isa);

// The active table. First call initialises from SPARQ_ISA (or the best path).
const KernelTable& kernels();
// Error text when SPARQ_ISA asked for something unusable ("" when fine).
const std::string& dispatch_error();
// Switch the active int8/f32 paths (tests, benchmarks). Returns false with a
// reason when the ISA is unsupported here. Packed formats do not depend on the
// ISA, so weights stay valid across switches.
bool set_isa(Isa isa, std::string* why);
bool parse_isa(const std::string& s, Isa* out);

}  // namespace sparq
