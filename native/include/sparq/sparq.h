// sparq/sparq.h - the kernel library's public C++ API (no Node types). Every
// function reports failure through Status + message; nothing throws across
// this boundary and nothing aborts the process.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "sparq/formats.h"

namespace sparq {

enum class Status : int { ok = 0, invalid_argument = 1, out_of_memory = 2, unsupported = 3, internal = 4 };

struct Error {
  Status status = Status::ok;
  std::string message;
  bool ok() const { return status == Status::ok; }
  static Error make(Status s, std::string m) { return Error{s, std::move(m)}; }
};

// --- memory -------------------------------------------------------------------
// 64-byte aligned allocation; nullptr on failure (never throws).
void* aligned_malloc(size_t bytes);
void aligned_free(void* p);
struct AlignedDeleter { void operator()(void* p) const { aligned_free(p); } };

// std::vector storage for weight arrays: aligned_malloc's arena, so that blocks of
// 2 MiB and more lie on transparent huge pages as the dense weights do (with 4 KiB
// pages a sparse GEMV streaming 10 MiB from DRAM ran ~1.5x slower). Throws
// std::bad_alloc on failure, as std::allocator does.
template <class T>
struct WeightAllocator {
  using value_type = T;
  WeightAllocator() = default;
  template <class U>
  WeightAllocator(const WeightAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = n > SIZE_MAX / sizeof(T) ? nullptr : aligned_malloc(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { aligned_free(p); }
  template <class U>
  bool operator==(const WeightAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const WeightAllocator<U>&) const { return false; }
};
template <class T>
using WeightVector = std::vector<T, WeightAllocator<T>>;

// Large (weight-sized) allocation, 2 MiB aligned with transparent huge pages
// asked for (one page fault per 2 MiB instead of per 4 KiB); counted in
// allocated_bytes; nullptr on failure.
void* huge_malloc(size_t bytes);
void huge_free(void* p);

// Bytes currently held by sparq allocations (for leak checks; blocks the arena
// keeps for reuse are not counted).
int64_t allocated_bytes();

// The arena behind aligned_malloc's blocks of 64 KiB and more (memory.cpp):
// freed blocks kept by size class for reuse, bounded by `cap` bytes, unmapped
// after 5 s unused. arena_trim() unmaps every kept block now.
struct ArenaStats {
  bool on;          // false under AddressSanitizer or SPARQ_ARENA_MIB=0
  int64_t cap;      // bytes it may keep
  int64_t cached;   // bytes kept now
  int64_t hits;     // requests served from kept blocks since start
  int64_t misses;   // requests that mapped fresh memory
};
ArenaStats arena_stats();
void arena_trim();

// Read-only file mappings (the model files' weights used in place) are
// registered, so that a weight copied out of one (a repack at load) can give
// its pages back: release_file_pages drops the whole pages of [p, p + bytes)
// from the process's memory (a later read maps them again from the page
// cache) when the range lies inside a registered mapping, and does nothing
// otherwise. A mapping registered with its open file (fd >= 0, owned and
// closed by unregister_file_mapping) can also be read with read_file_bytes:
// copies [p, p + bytes) into dst with pread and returns true when the range
// lies in such a mapping (false otherwise, or on a read error: the caller
// copies from memory). On VMs that shadow the page tables, the first touch of
// each mapped 4 KiB page costs a hypervisor exit (~2 us: 0.3 s for 640 MiB)
// where pread copies from the kernel's own mapping at 10+ GB/s.
void register_file_mapping(const void* p, size_t bytes, int fd = -1);
void unregister_file_mapping(const void* p);
void release_file_pages(const void* p, size_t bytes);
bool read_file_bytes(const void* p, size_t bytes, void* dst);

// --- packed int8 weights -------------------------------------------------------
// Owns the storage behind a PackedS8.
class PackedWeight {
 public:
  ~PackedWeight();
  PackedWeight(const PackedWeight&) = delete;
  PackedWeight& operator=(const PackedWeight&) = delete;
  const PackedS8& view() const { return p_; }
  size_t bytes() const { return bytes_; }
  bool asymmetric() const { return p_.zeros != nullptr; }
  // group size as the user gave it (0: per-channel)
  int64_t user_group() const { return user_group_; }
  // Allocates storage for an n x k weight with `group` (0 = per-channel).
  static Error create(int64_t n, int64_t k, int64_t group, bool with_scales, bool asymmetric,
                      std::unique_ptr<PackedWeight>* out);

  PackedS8 p_;
 private:
  PackedWeight() = default;
  void* mem_ = nullptr;
  size_t bytes_ = 0;
  int64_t user_group_ = 0;
};

// Packs int8 values [n, k] (row-major) with optional scales/zeros [n, groups].
Error pack_s8(const int8_t* w, int64_t n, int64_t k, int64_t group, const float* scales, const int32_t* zeros,
              std::unique_ptr<PackedWeight>* out);
// Reads back values [n, k], scales [n, groups] and zeros [n, groups] (any may be nullptr).
void unpack_s8(const PackedS8& b, int8_t* values, float* scales, int32_t* zeros);

// GGUF Q8_0 blocks (f16 scale + 32 int8 each) of rows [r0, r1), produced in chunks by fill
// (read from a file) -> an int8 group-32 packed weight [n, k].
Error pack_q8_0_stream(int64_t n, int64_t k, const std::function<Error(uint8_t* blocks, int64_t r0, int64_t r1)>& fill,
                       std::unique_ptr<PackedWeight>* out);
// Values of any GGUF type sparq reads (F32, F16, BF16, Q4_0 .. Q6_K, IQ4_NL / IQ4_XS;
// native/cpu/quants.h) -> f32, exactly as ggml dequantizes them.
Error widen_to_f32(const void* src, int type, int64_t count, float* out);

// --- quantizers -----------------------------------------------------------------
struct QuantizeOptions {
  int64_t group = 0;        // 0: per output channel; else 32/64/128/... along k
  bool asymmetric = false;  // zero point per channel/group (values in [-128, 127])
};
// Quantizes f32 weights [n, k]; symmetric: s = max|w| / 127, q in [-127, 127];
// asymmetric: s = (max - min) / 255, z = round(-128 - min / s), q in [-128, 127].
Error quantize_weight(const float* w, int64_t n, int64_t k, const QuantizeOptions& opt,
                      std::unique_ptr<PackedWeight>* out);
// The same, with the f32 rows produced in chunks by fill(rows, r0, r1) (rows
// [r0, r1) into `rows`, row-major): a weight read from a file is quantized
// without ever holding all of it in f32.
Error quantize_weight_stream(int64_t n, int64_t k, const QuantizeOptions& opt,
                             const std::function<Error(float* rows, int64_t r0, int64_t r1)>& fill,
                             std::unique_ptr<PackedWeight>* out);
// f32 [n, k] = scale * (q - zero)
void dequantize_weight(const PackedS8& b, float* out);

// --- ops --------------------------------------------------------------------
// Exact int32 C[m, n] = A[m, k] . B^T (B packed, symmetric, per-channel layout).
Error matmul_s8(const int8_t* a, int64_t m, int64_t k, const PackedS8& b, int32_t* c);
// y[m, n] = dequant(int8 GEMM(quant(x), B)) + bias: dynamic per-row activation
// scales, or one static scale when static_scale > 0.
Error linear_s8(const float* x, int64_t m, int64_t k, const PackedS8& b, const float* bias, float static_scale,
                float* y);
// c[m, n] = a[m, k] . b[k, n] (+ bias[n])
Error matmul_f32(const float* a, int64_t m, int64_t k, const float* b, int64_t n, const float* bias, float* c);
// y[m, n] = x[m, k] . w[n, k]^T (+ bias[n])
Error linear_f32(const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* y);

// --- the decoder's small ops (f32) ------------------------------------------------
// y[r, :] = x[r, :] * w / sqrt(mean(x[r, :]^2) + eps)        x, y: (rows, d); w: (d)
Error rmsnorm(const float* x, const float* w, int64_t rows, int64_t d, float eps, float* y);
// softmax over the last dimension                           x, y: (rows, n)
Error softmax(const float* x, int64_t rows, int64_t n, float* y);
// y = silu(a) * b, elementwise over n values
Error swiglu(const float* a, const float* b, int64_t n, float* y);
// Rows of [gate | up] (2h values each) -> y[rows, h] = silu(gate) * up (a fused gate|up linear's output).
Error swiglu_rows(const float* gu, int64_t rows, int64_t h, float* y);
// y = a + b, elementwise over n values
Error add(const float* a, const float* b, int64_t n, float* y);
// Rotary position embedding of x (bh, t, d) -> y: row t is at position pos0 + t;
// pair i (i < d/2) turns by (pos0 + t) * theta^(-2i/d). Pairs are (2i, 2i+1)
// ("interleaved", Llama / llama2.c) or (i, i + d/2) ("neox", half split).
// freq_factors [d/2] (optional, each > 0): pair i's frequency is divided by
// factor i (Llama 3.1 `rope_freqs`, linear scaling: every factor the same).
Error rope(const float* x, int64_t bh, int64_t t, int64_t d, int64_t pos0, float theta, bool neox, float* y,
           const float* freq_factors = nullptr);
// rope() in two parts, for callers that turn many tensors at the same positions
// (a model's q and k in every layer): the cos / sin tables [t, d/2] once, then
// each tensor through them.
Error rope_table(int64_t t, int64_t d, int64_t pos0, float theta, const float* freq_factors, float* cs, float* sn);
void rope_apply(const float* x, int64_t bh, int64_t t, int64_t d, bool neox, const float* cs, const float* sn, float* y);

// --- attention ------------------------------------------------------------------
// Storage of keys and values: f32, IEEE f16 bits, or int8 with one f32 scale per
// (token, head) row (symmetric: x ~= q * scale, q in [-127, 127]).
enum class KvType : int { f32 = 0, f16 = 1, i8 = 2 };
// Bytes per stored element of each type.
constexpr int64_t kv_elem_size(KvType t) { return t == KvType::f32 ? 4 : t == KvType::f16 ? 2 : 1; }
template <KvType T>
constexpr int64_t kKvBytes = kv_elem_size(T);

// Keys and values of layout [b, hkv, cap, d] (element type `type`); rows t < tk
// of each (batch, head) are used. For i8, k_scale / v_scale are [b, hkv, cap].
struct KvSource {
  KvType type = KvType::f32;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  int64_t cap = 0;
};

// out[b, h, i, :] = softmax_j(scale * q[b, h, i, :] . k[b, h / g, j, :] + mask[i, j]) . v[b, h / g, j, :]
// with g = hq / hkv (grouped-query attention). Causal: query i sees keys
// j <= i + (tk - tq) (aligned bottom-right). The score matrix is never
// materialised: tiles of keys stream through an online softmax. A query row
// that sees no key (causal with tq > tk, or a mask of -inf) gets zeros.
struct AttentionArgs {
  const float* q = nullptr;  // [b, hq, tq, d]
  int64_t b = 0, hq = 0, tq = 0, d = 0;
  KvSource kv;
  int64_t hkv = 0, tk = 0;
  // Optional additive mask: element (bi, h, i, j) at mask[bi * mask_sb + h * mask_sh + i * tk + j]
  // (strides 0 broadcast over batch / heads).
  const float* mask = nullptr;
  int64_t mask_sb = 0, mask_sh = 0;
  float scale = 0.f;  // usually 1 / sqrt(d)
  bool causal = false;
  float* out = nullptr;  // [b, hq, tq, d]
  // Ragged batch (varlen; no mask): when q_len is set, sequence i of the b has
  // q_len[i] >= 1 query positions and sees the first k_len[i] keys of cache
  // entry kv_index[i] (nullptr: entry i) of kv_entries (0: b). q and out are then
  // packed sequence after sequence, each [hq, q_len[i], d]; tq must be the sum
  // of q_len and tk the largest k_len. Causal aligns each sequence bottom-right.
  const int64_t* q_len = nullptr;
  const int64_t* k_len = nullptr;
  const int64_t* kv_index = nullptr;
  int64_t kv_entries = 0;
};
Error attention(const AttentionArgs& args);
// The textbook version for comparison: materialises each head's [tq, tk] score
// matrix (O(tq * tk) memory), softmax, then P . V. f32 keys/values only.
Error attention_naive(const AttentionArgs& args);
// Writes src [b, h, t, d] (f32) into rows [pos, pos + t) of a [b, h, cap, d]
// store of type `type` (i8: quantized per row, scales into scale [b, h, cap]).
Error kv_store(const float* src, int64_t b, int64_t h, int64_t t, int64_t d, KvType type, void* dst, float* scale,
               int64_t cap, int64_t pos);

// Histogram of x over [lo, hi] into `bins` counts (values outside are clamped).
void histogram_f32(const float* x, int64_t count, float lo, float hi, int64_t bins, double* counts);
// min, max over x (NaN ignored)
void minmax_f32(const float* x, int64_t count, float* mn, float* mx);
// The index of the largest of x[0, n) (the first of equal ones; -inf takes part), or
// -1 - i when x[i] is the first NaN or +inf (a greedy pick from such logits would be
// arbitrary); 0 when n < 1. The greedy sampler's pick, on the calling thread (~microseconds).
int64_t argmax_f32(const float* x, int64_t n);

// --- runtime ----------------------------------------------------------------
struct RuntimeInfo {
  std::string isa;        // int8 GEMM path
  std::string sgemm;      // f32 GEMM path
  std::string quant;      // activation quantizer path
  std::string attention;  // attention path
  std::string sparse;     // sparse x dense path (avx512vbmi2: int8 bitmask by vpexpandb)
  std::vector<std::string> features;
  std::string vendor, brand;
  std::string dispatch_error;
  int threads = 1;
  int physical_cores = 1;
  std::vector<std::string> supported_isas;
  std::vector<std::string> emulated_isas;  // of those, the ones run with emulated intrinsics (test builds)
};
RuntimeInfo runtime_info();
Error set_isa(const std::string& name);
void set_threads(int n);

// Measured ceilings of this machine (in-register loops, all pool threads):
// AVX2 fp32 FMA and int8 vpmaddubsw+vpmaddwd+vpaddd in GOPS (1 multiply-add =
// 2 ops), and DRAM read bandwidth in GB/s over `dram_bytes` of memory. Zero
// where the CPU lacks AVX2.
struct Ceilings {
  double fp32_avx2_gops = 0, int8_avx2_gops = 0, dram_read_gbs = 0;
  // 0 where the CPU lacks the unit (measured on the CPU itself, never emulated)
  double fp32_avx512_gops = 0, int8_avxvnni_gops = 0, int8_avx512vnni_gops = 0;
  int threads = 1;
};
Ceilings measure_ceilings(int64_t dram_bytes);

// CUDA (cuda/): whether compiled in, device count (0 when no driver/device).
struct CudaDevice {
  std::string name;
  int major = 0, minor = 0, sms = 0;
  double memory_bytes = 0, clock_mhz = 0, bandwidth_gbs = 0;  // bandwidth: from bus width x memory clock
};
struct CudaInfo {
  bool compiled = false;
  int devices = 0;
  std::vector<CudaDevice> device_list;
  int runtime_version = 0, driver_version = 0;
  std::string archs;  // compiled architectures
  std::string error;  // why devices == 0, when known
};
CudaInfo cuda_info();

}  // namespace sparq
