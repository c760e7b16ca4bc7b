// dispatch.cpp - cpuid/xgetbv feature detection, AMX permission request and
// the kernel table. Never selects an instruction set that the CPU or the OS
// lacks: AVX needs XCR0 bits 1-2, AVX-512 bits 5-7, AMX bits 17-18 plus the
// Linux permission for the XTILEDATA state.
#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__x86_64__) || defined(_M_X64)
#define SPARQ_X86 1
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace sparq {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::ref: return "ref";
    case Isa::avx2: return "avx2";
    case Isa::avxvnni: return "avxvnni";
    case Isa::avx512vnni: return "avx512vnni";
    case Isa::amx: return "amx";
  }
  return "?";
}

bool parse_isa(const std::string& s, Isa* out) {
  static const Isa all[] = {Isa::ref, Isa::avx2, Isa::avxvnni, Isa::avx512vnni, Isa::amx};
  for (Isa i : all)
    if (s == isa_name(i)) { *out = i; return true; }
  return false;
}

// --- detection ---------------------------------------------------------------
#ifdef SPARQ_X86
static void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) { __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]); }
static uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
static bool request_amx_permission() {
#if defined(__linux__)
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) == 0 && (bitmask & (1ul << kXfeatureXtiledata))) return true;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  bitmask = 0;
  return syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) == 0 && (bitmask & (1ul << kXfeatureXtiledata));
#else
  return false;
#endif
}
#endif

static CpuFeatures detect() {
  CpuFeatures f;
#ifdef SPARQ_X86
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  char vendor[13] = {0};
  std::memcpy(vendor, &r[1], 4); std::memcpy(vendor + 4, &r[3], 4); std::memcpy(vendor + 8, &r[2], 4);
  f.vendor = vendor;
  cpuid(0x80000000u, 0, r);
  if (r[0] >= 0x80000004u) {
    char brand[49] = {0};
    for (unsigned i = 0; i < 3; ++i) { cpuid(0x80000002u + i, 0, r); std::memcpy(brand + 16 * i, r, 16); }
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    size_t s = f.brand.find_first_not_of(' ');
    f.brand = s == std::string::npos ? "" : f.brand.substr(s);
  }
  cpuid(1, 0, r);
  const bool osxsave = r[2] & (1u << 27);
  f.fma = r[2] & (1u << 12);
  f.f16c = r[2] & (1u << 29);
  const bool avx = r[2] & (1u << 28);
  if (osxsave) {
    const uint64_t xcr0 = xgetbv0();
    f.os_avx = avx && (xcr0 & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;
    f.os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);
  }
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    f.avx2 = r[1] & (1u << 5);
    f.avx512f = r[1] & (1u << 16);
    f.avx512dq = r[1] & (1u << 17);
    f.avx512bw = r[1] & (1u << 30);
    f.avx512vl = r[1] & (1u << 31);
    f.avx512vbmi2 = r[2] & (1u << 6);
    f.avx512vnni = r[2] & (1u << 11);
    f.amx_bf16 = r[3] & (1u << 22);
    f.avx512fp16 = r[3] & (1u << 23);
    f.amx_tile = r[3] & (1u << 24);
    f.amx_int8 = r[3] & (1u << 25);
    const unsigned sub_leaves = r[0];
    if (sub_leaves >= 1) {
      cpuid(7, 1, r);
      f.avxvnni = r[0] & (1u << 4);
      f.avx512bf16 = r[0] & (1u << 5);
    }
  }
  if (!f.os_avx) f.avx2 = f.fma = f.f16c = f.avxvnni = false;
  if (!f.os_avx512)
    f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vnni = f.avx512bf16 = f.avx512fp16 = f.avx512vbmi2 = false;
  if (f.os_amx && f.amx_tile && f.amx_int8) f.amx_permitted = request_amx_permission();
  if (!f.os_amx || !f.amx_permitted) f.amx_tile = f.amx_int8 = f.amx_bf16 = false;
#endif
  return f;
}

std::vector<std::string> CpuFeatures::names() const {
  std::vector<std::string> v;
  auto add = [&](bool b, const char* n) { if (b) v.emplace_back(n); };
  add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c"); add(avxvnni, "avxvnni");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512vl, "avx512vl"); add(avx512dq, "avx512dq");
  add(avx512vnni, "avx512vnni"); add(avx512vbmi2, "avx512vbmi2"); add(avx512bf16, "avx512bf16");
  add(avx512fp16, "avx512fp16"); add(amx_tile, "amx_tile"); add(amx_int8, "amx_int8"); add(amx_bf16, "amx_bf16");
  return v;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

static bool avx512_base(const CpuFeatures& f) { return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma; }

// The emulated build (CMake SPARQ_EMULATE_ISA, and the sparq_core_emu library of
// the native tests): the AVX-VNNI, AVX-512 and AMX objects are compiled with
// -mavx2 and their intrinsics replaced by plain C++ (native/test/emu/), so those
// paths - drivers, strips, tails and kernels - run on any CPU with AVX2, slowly.
bool isa_emulated(Isa isa) {
#ifdef SPARQ_EMULATED_ISA
  return isa == Isa::avxvnni || isa == Isa::avx512vnni || isa == Isa::amx;
#else
  (void)isa;
  return false;
#endif
}

bool isa_supported(Isa isa, std::string* why) {
  const CpuFeatures& f = cpu_features();
  const char* missing = nullptr;
  if (isa_emulated(isa)) {
    if (!(f.avx2 && f.fma && f.f16c)) missing = "avx2+fma+f16c (the emulated paths are built on AVX2)";
    if (missing && why) *why = std::string("this CPU/OS lacks ") + missing;
    return missing == nullptr;
  }
  switch (isa) {
    case Isa::ref: return true;
    case Isa::avx2: if (!(f.avx2 && f.fma && f.f16c)) missing = "avx2+fma+f16c (with OS AVX state)"; break;
    case Isa::avxvnni: if (!(f.avx2 && f.fma && f.avxvnni)) missing = "avxvnni"; break;
    case Isa::avx512vnni: if (!(avx512_base(f) && f.avx512vnni)) missing = "avx512f/bw/vl/dq + avx512vnni (with OS ZMM state)"; break;
    case Isa::amx:
      if (!(avx512_base(f) && f.avx512vnni)) missing = "avx512vnni (needed beside AMX)";
      else if (!f.os_amx) missing = "amx_tile+amx_int8 with OS tile state (XCR0 bits 17-18)";
      else if (!f.amx_permitted) missing = "AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM was refused)";
      else if (!(f.amx_tile && f.amx_int8)) missing = "amx_tile+amx_int8";
      break;
  }
  if (missing && why) *why = std::string("this CPU/OS lacks ") + missing;
  return missing == nullptr;
}

Isa best_isa() {
  const Isa order[] = {Isa::amx, Isa::avx512vnni, Isa::avxvnni, Isa::avx2};
  for (Isa i : order)
    if (!isa_emulated(i) && isa_supported(i)) return i;  // an emulated path runs only when asked for
  return Isa::ref;
}

static KernelTable make_table(Isa isa) {
  KernelTable t;
  t.isa = isa;
  t.gemm_s8 = gemm_s8_ref; t.pack_s8_block = pack_s8_block_ref; t.sgemm = sgemm_ref; t.sgemv = sgemv_ref; t.quant_rows = quant_rows_ref;
  t.rmsnorm = rmsnorm_ref; t.softmax = softmax_ref; t.swiglu = swiglu_ref; t.add = add_ref; t.to_half = to_half_ref; t.argmax = argmax_ref;
  t.attn = attn_ref;
  t.spmv = spmv_ref; t.spmmt = spmmt_ref; t.sprow = sprow_ref; t.q4_gemv = q4_gemv_ref;
  t.block_gemv = block_gemv_ref; t.block_decode_row = block_decode_ref; t.block_quant = block_quant_ref;
  t.x16_pack = x16_pack_ref;
  t.attn_name = "ref";
  t.sgemm_name = "ref";
#ifdef SPARQ_X86
  if (isa != Isa::ref) {
    t.quant_rows = quant_rows_avx2;
    t.pack_s8_block = pack_s8_block_avx2;
    t.rmsnorm = rmsnorm_avx2; t.softmax = softmax_avx2; t.swiglu = swiglu_avx2; t.add = add_avx2; t.to_half = to_half_avx2; t.argmax = argmax_avx2;
    t.attn = attn_avx2;
    t.spmv = spmv_avx2; t.spmmt = spmmt_avx2; t.sprow = sprow_avx2; t.sparse_name = "avx2";
    t.q4_gemv = q4_gemv_avx2;
    t.block_gemv = block_gemv_avx2; t.block_decode_row = block_decode_row_avx2; t.block_quant = block_quant_avx2;
    t.x16_pack = x16_pack_avx2;
    t.block_x16_types |= 1u << int(GgmlType::q5_k) | 1u << int(GgmlType::q6_k) | 1u << int(GgmlType::q8_0);
    t.attn_name = "avx2";
    t.sgemm = sgemm_avx2; t.sgemv = sgemv_avx2; t.sgemm_name = "avx2";
  }
  if (isa == Isa::avx512vnni || isa == Isa::amx) {
    t.sgemm = sgemm_avx512; t.sgemv = sgemv_avx512; t.sgemm_name = "avx512";
    t.attn = attn_avx512; t.attn_name = "avx512";
    t.block_gemv = block_gemv_avx512;
    t.x16_pack = x16_pack_avx512;
    if (cpu_features().avx512vbmi2 || isa_emulated(isa)) {
      t.spmv = spmv_avx512;
      t.sprow = sprow_avx512;
      t.sparse_name = "avx512vbmi2";
    }
  }
  switch (isa) {
    case Isa::ref: break;
    case Isa::avx2: t.gemm_s8 = gemm_s8_avx2; t.gemm_s8_sign_trick = true; break;
    case Isa::avxvnni: t.gemm_s8 = gemm_s8_avxvnni; t.gemm_s8_a_u8 = true; break;
    case Isa::avx512vnni:
      t.gemm_s8 = gemm_s8_avx512vnni; t.gemm_s8_a_u8 = true; t.gemm_s8_task_rows = 128; t.gemm_s8_task_blocks = 6;
      break;
    case Isa::amx: t.gemm_s8 = gemm_s8_amx; t.gemm_s8_task_rows = 256; t.gemm_s8_task_blocks = 16; break;
  }
#endif
  return t;
}

// The active table is replaced atomically; readers take a snapshot per op.
static std::mutex g_mu;
static KernelTable g_tables[5];
static std::atomic<int> g_active{-1};
static std::string g_error;

static void init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int i = 0; i < 5; ++i) g_tables[i] = make_table(Isa(i));
    Isa isa = best_isa();
    const char* env = std::getenv("SPARQ_ISA");
    if (env && *env) {
      Isa want;
      std::string why;
      if (!parse_isa(env, &want))
        g_error = std::string("SPARQ_ISA='") + env + "' is not one of ref, avx2, avxvnni, avx512vnni, amx";
      else if (!isa_supported(want, &why))
        g_error = std::string("SPARQ_ISA=") + env + " cannot run here: " + why;
      else
        isa = want;
    }
    g_active.store(int(isa));
  });
}

const KernelTable& kernels() {
  init_once();
  return g_tables[g_active.load(std::memory_order_acquire)];
}

const std::string& dispatch_error() {
  init_once();
  return g_error;
}

bool set_isa(Isa isa, std::string* why) {
  init_once();
  std::lock_guard<std::mutex> lock(g_mu);
  if (!isa_supported(isa, why)) return false;
  g_active.store(int(isa), std::memory_order_release);
  return true;
}

}  // namespace sparq
