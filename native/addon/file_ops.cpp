// file_ops.cpp - model files into native memory: memory-mapped whole (map_file,
// `mapFile`), read (`readFile`), or f32 / Q8_0 rows quantized or packed to int8
// as they are read, in chunks (`quantizeFile`, `packQ8File`).
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addon.h"

namespace sparq_addon {

using sparq::Error;

namespace {
std::atomic<int64_t> g_mapped{0};
}  // namespace

Error map_file(const std::string& path, void** p, size_t* bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::make(sparq::Status::invalid_argument, "mapFile: cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    const std::string why = st.st_size <= 0 && S_ISREG(st.st_mode) ? "is empty" : "is not a regular file";
    ::close(fd);
    return Error::make(sparq::Status::invalid_argument, "mapFile: " + path + " " + why);
  }
  // Private and writable: a write (none is made) would copy its page, never
  // reach the file. Not MAP_POPULATE: on a writable private mapping it write-
  // faults (copies) every page. MADV_POPULATE_READ (Linux 5.14) maps the page
  // cache's pages read-shared, 2 MiB at a time where the cache holds large
  // folios (1.1 GB: 6 ms); older kernels touch one byte per page instead.
  void* m = ::mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int err = errno;
  if (m == MAP_FAILED) {
    ::close(fd);
    return Error::make(sparq::Status::out_of_memory, "mapFile: cannot map " + path + ": " + std::strerror(err));
  }
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  if (::madvise(m, size_t(st.st_size), MADV_POPULATE_READ) != 0) {
    const volatile char* c = static_cast<const char*>(m);
    char sum = 0;
    for (off_t i = 0; i < st.st_size; i += 4096) sum = char(sum + c[i]);
    (void)sum;
  }
  *p = m;
  *bytes = size_t(st.st_size);
  // a repacked weight reads its bytes with pread and gives the pages back; the
  // registry closes the fd with the mapping
  sparq::register_file_mapping(m, size_t(st.st_size), fd);
  g_mapped.fetch_add(int64_t(st.st_size));
  return Error{};
}

void unmap_file(void* p, size_t bytes) {
  if (!p) return;
  sparq::unregister_file_mapping(p);
  ::munmap(p, bytes);
  g_mapped.fetch_sub(int64_t(bytes));
}

int64_t mapped_bytes() { return g_mapped.load(); }

namespace {

// mapFile(path) -> Promise<Storage> over the whole file, memory-mapped: weights
// used as stored point into it (no copy; pages shared with the page cache).
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "mapFile: path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  auto block = std::make_shared<Block>();
  return RunAsync(
      env,
      [path, block]() {
        Error e = map_file(path, &block->p, &block->bytes);
        if (e.ok()) block->mapped = true;
        return e;
      },
      [block](Napi::Env e) -> Napi::Value { return Storage::Wrap(e, block); });
}

// readFile(path, offset, bytes) -> Promise<Storage> holding those bytes of the file;
// readFile(path, [offset0, bytes0, offset1, bytes1, ...]) -> the ranges, concatenated.
Napi::Value ReadFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "readFile: path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::pair<int64_t, int64_t>> ranges;
  if (info.Length() > 1 && info[1].IsArray()) {
    Napi::Array a = info[1].As<Napi::Array>();
    if (a.Length() == 0 || a.Length() % 2 || a.Length() > 64) throw Napi::RangeError::New(env, "readFile: ranges must be 1..32 (offset, bytes) pairs");
    for (uint32_t i = 0; i < a.Length(); i += 2) {
      const double o = a.Get(i).ToNumber().DoubleValue(), b = a.Get(i + 1).ToNumber().DoubleValue();
      if (!(o >= 0 && o <= double(int64_t(1) << 50)) || !(b >= 0 && b <= double(int64_t(1) << 46)) || o != double(int64_t(o)) ||
          b != double(int64_t(b)))
        throw Napi::RangeError::New(env, "readFile: bad range");
      ranges.push_back({int64_t(o), int64_t(b)});
    }
  } else {
    ranges.push_back({ArgInt(info, 1, "readFile", "offset", 0, int64_t(1) << 50), ArgInt(info, 2, "readFile", "bytes", 0, int64_t(1) << 46)});
  }
  int64_t total = 0;
  for (auto& r : ranges) total += r.second;
  if (total > (int64_t(1) << 46)) throw Napi::RangeError::New(env, "readFile: too many bytes");
  auto block = std::make_shared<Block>();
  return RunAsync(
      env,
      [path, ranges, total, block]() {
        block->p = sparq::aligned_malloc(size_t(total ? total : 1));
        if (!block->p)
          return Error::make(sparq::Status::out_of_memory, "readFile: cannot allocate " + std::to_string(total) + " bytes");
        block->bytes = size_t(total);
        FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) return Error::make(sparq::Status::invalid_argument, "readFile: cannot open " + path + ": " + std::strerror(errno));
        char* dst = static_cast<char*>(block->p);
        for (auto [off, bytes] : ranges) {
          size_t got = 0;
          if (fseeko(f, off_t(off), SEEK_SET) == 0) got = std::fread(dst, 1, size_t(bytes), f);
          if (got != size_t(bytes)) {
            std::fclose(f);
            return Error::make(sparq::Status::invalid_argument, "readFile: " + path + " is truncated: wanted " +
                                                                    std::to_string(bytes) + " bytes at offset " +
                                                                    std::to_string(off) + ", got " + std::to_string(got));
          }
          dst += bytes;
        }
        std::fclose(f);
        return Error{};
      },
      [block](Napi::Env e) -> Napi::Value { return Storage::Wrap(e, block); });
}
// Rows of a weight stored in a file as ranges (offset, rows) read back to back;
// read(dst, r0, r1) fills rows [r0, r1) of the concatenation.
struct RowRanges {
  std::string path;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t row_bytes = 0, rows = 0;
  FILE* f = nullptr;
  ~RowRanges() { if (f) std::fclose(f); }
  Error open() {
    f = std::fopen(path.c_str(), "rb");
    return f ? Error{} : Error::make(sparq::Status::invalid_argument, "cannot open " + path + ": " + std::strerror(errno));
  }
  Error read(void* dst, int64_t r0, int64_t r1) {
    int64_t base = 0;
    for (auto [off, cnt] : ranges) {
      const int64_t a0 = std::max(r0, base), a1 = std::min(r1, base + cnt);
      if (a0 < a1) {
        const size_t want = size_t((a1 - a0) * row_bytes);
        size_t got = 0;
        if (fseeko(f, off_t(off + (a0 - base) * row_bytes), SEEK_SET) == 0)
          got = std::fread(static_cast<char*>(dst) + (a0 - r0) * row_bytes, 1, want, f);
        if (got != want) return Error::make(sparq::Status::invalid_argument, path + " is truncated");
      }
      base += cnt;
    }
    return Error{};
  }
};

// (path, [offset0, rows0, offset1, rows1, ...]) -> RowRanges, checked
std::shared_ptr<RowRanges> ArgRanges(const Napi::CallbackInfo& info, const char* op) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray()) throw Napi::TypeError::New(env, std::string(op) + ": expected (path, ranges, k)");
  auto r = std::make_shared<RowRanges>();
  r->path = info[0].As<Napi::String>().Utf8Value();
  Napi::Array a = info[1].As<Napi::Array>();
  if (a.Length() == 0 || a.Length() % 2 || a.Length() > 64) throw Napi::RangeError::New(env, std::string(op) + ": ranges must be 1..32 (offset, rows) pairs");
  for (uint32_t i = 0; i < a.Length(); i += 2) {
    const double o = a.Get(i).ToNumber().DoubleValue(), n = a.Get(i + 1).ToNumber().DoubleValue();
    if (!(o >= 0 && o <= double(int64_t(1) << 50)) || !(n >= 1 && n <= double(int64_t(1) << 30)) || o != double(int64_t(o)) || n != double(int64_t(n)))
      throw Napi::RangeError::New(env, std::string(op) + ": bad range");
    r->ranges.push_back({int64_t(o), int64_t(n)});
    r->rows += int64_t(n);
  }
  return r;
}

// quantizeFile(path, [offset0, rows0, ...], k) -> Promise<Packed>: f32 rows quantized per
// output channel, read in chunks (never all of the f32 weight at once).
Napi::Value QuantizeFile(const Napi::CallbackInfo& info) {
  auto r = ArgRanges(info, "quantizeFile");
  const int64_t k = ArgInt(info, 2, "quantizeFile", "k", 1, int64_t(1) << 24);
  r->row_bytes = k * 4;
  auto out = std::make_shared<std::unique_ptr<sparq::PackedWeight>>();
  return RunAsync(
      info.Env(),
      [r, k, out]() {
        if (Error e = r->open(); !e.ok()) return e;
        return sparq::quantize_weight_stream(r->rows, k, sparq::QuantizeOptions{},
                                             [&](float* rows, int64_t r0, int64_t r1) { return r->read(rows, r0, r1); }, out.get());
      },
      [out](Napi::Env e) -> Napi::Value { return Packed::Wrap(e, std::shared_ptr<sparq::PackedWeight>(std::move(*out))); });
}

// packQ8File(path, [offset0, rows0, ...], k) -> Promise<Packed>: Q8_0 rows packed as int8 group 32, in chunks.
Napi::Value PackQ8File(const Napi::CallbackInfo& info) {
  auto r = ArgRanges(info, "packQ8File");
  const int64_t k = ArgInt(info, 2, "packQ8File", "k", 32, int64_t(1) << 24);
  if (k % sparq::kQK8_0) throw Napi::RangeError::New(info.Env(), "packQ8File: k must be a multiple of 32");
  r->row_bytes = (k / sparq::kQK8_0) * sparq::kQ8_0Bytes;
  auto out = std::make_shared<std::unique_ptr<sparq::PackedWeight>>();
  return RunAsync(
      info.Env(),
      [r, k, out]() {
        if (Error e = r->open(); !e.ok()) return e;
        return sparq::pack_q8_0_stream(r->rows, k, [&](uint8_t* blocks, int64_t r0, int64_t r1) { return r->read(blocks, r0, r1); }, out.get());
      },
      [out](Napi::Env e) -> Napi::Value { return Packed::Wrap(e, std::shared_ptr<sparq::PackedWeight>(std::move(*out))); });
}
}  // namespace

void RegisterFiles(Napi::Env env, Napi::Object exports) {
  Export(env, exports, {
      {"readFile", ReadFile},
      {"mapFile", MapFile},
      {"quantizeFile", QuantizeFile},
      {"packQ8File", PackQ8File},
  });
}

}  // namespace sparq_addon
