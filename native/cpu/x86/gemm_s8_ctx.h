// gemm_s8_ctx.h - the ISA-independent part of the AVX-VNNI, AVX-512 VNNI and
// AMX int8 kernels: their flattened arguments and the contract checks. No
// intrinsics, so each kernel file includes it under its own ISA flags; the
// anonymous namespace gives every file its own copy.
#pragma once
#include <cassert>
#include <cstdint>

#include "../kernels.h"

namespace sparq {
namespace {

struct Ctx {
  const uint8_t* a;  // row i at a + i * lda
  int64_t lda;
  const int8_t* b;   // packed data
  int64_t bstride;   // bytes per 16-column block = k_pad * 16
  int64_t gsteps;    // k-steps (of 4 k) per group: k_pad / 4 when groups == 1
  int64_t ksteps;    // k_pad / 4: the last group is clamped to it
  int64_t groups;    // b->groups (1 in exact mode)
  bool grouped;      // f32 output with more than one scale group
  const int32_t* colsum;
  const float* scales;
  const float* bias;
  const float* a_scale;
  const float* a_gscale;  // (m, groups) or nullptr (see GemmS8Args)
  float* c;
  int32_t* ci;
  int64_t ldc;
  int64_t n;
};

// Checks the call against the contract of gemm_s8_ref (kernels.h) and
// flattens it. The checks are live in the checked builds (native tests,
// sanitizer and emulated builds: -UNDEBUG), compiled out in release ones. The packer keeps k_pad a multiple of 64 and of the group, so
// groups * group <= k_pad; the kernels still clamp the last group to k_pad.
inline Ctx make_ctx(const GemmS8Args& p, int64_t m0, int64_t m1, int64_t nb0, int64_t nb1) {
  assert(p.a && p.b);
  const PackedS8& b = *p.b;
  assert(b.data && b.colsum);
  assert(b.k_pad % kS8StepK == 0 && b.k_pad >= b.k && b.n_pad % kS8BlockN == 0 && b.n <= b.n_pad);
  assert(p.lda >= b.k_pad);
  assert(0 <= m0 && m0 <= m1 && m1 <= p.m);
  assert(0 <= nb0 && nb0 <= nb1 && nb1 <= s8_blocks(b));
  assert(b.groups >= 1 && b.group > 0 && b.group % kS8StepK == 0 && (b.groups - 1) * b.group < b.k_pad);
  assert(p.ci ? b.groups == 1 : (p.c && b.scales && p.a_scale));
  assert(p.ldc >= b.n);
  (void)m0; (void)m1; (void)nb0; (void)nb1;
  const bool grouped = !p.ci && b.groups > 1;
  Ctx x;
  x.a = p.a;
  x.lda = p.lda;
  x.b = b.data;
  x.bstride = b.k_pad * kS8BlockN;
  x.grouped = grouped;
  x.gsteps = grouped ? b.group / kS8StepK : b.k_pad / kS8StepK;
  x.ksteps = b.k_pad / kS8StepK;
  x.groups = b.groups;
  x.colsum = b.colsum;
  x.scales = b.scales;
  x.bias = p.bias;
  x.a_scale = p.a_scale;
  x.a_gscale = grouped ? p.a_gscale : nullptr;
  x.c = p.c;
  x.ci = p.ci;
  x.ldc = p.ldc;
  x.n = b.n;
  return x;
}

}  // namespace
}  // namespace sparq
