// memory.cpp - 64-byte aligned allocations with a running byte count.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <utility>
#include <vector>

#include "sparq/sparq.h"

namespace sparq {

static std::atomic<int64_t> g_bytes{0};

// Requests above the machine's physical memory are refused up front: with
// overcommit the OS could grant them and the first touch would kill the process.
static size_t physical_bytes() {
  static const size_t n = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(1) << 46;
  }();
  return n;
}

// Plain malloc with the alignment done here: posix_memalign asks glibc for
// size + alignment slack, so a freed block never fits the next request of the
// same size and the heap fragments (measured: every 64 KiB tensor created and
// disposed in Node left 64 KiB of RSS behind). The 16 bytes before the aligned
// pointer hold the raw pointer and the size.
struct Header {
  void* raw;
  size_t bytes;
};
static_assert(sizeof(Header) == 16, "header fits the slack");

void* aligned_malloc(size_t bytes) {
  if (bytes > physical_bytes()) return nullptr;
  void* raw = std::malloc(bytes + 64 + sizeof(Header));
  if (!raw) return nullptr;
  const uintptr_t p = (reinterpret_cast<uintptr_t>(raw) + sizeof(Header) + 63) & ~uintptr_t(63);
  Header* h = reinterpret_cast<Header*>(p) - 1;
  h->raw = raw;
  h->bytes = bytes;
  g_bytes.fetch_add(int64_t(bytes));
  return reinterpret_cast<void*>(p);
}

void aligned_free(void* p) {
  if (!p) return;
  const Header* h = static_cast<Header*>(p) - 1;
  g_bytes.fetch_sub(int64_t(h->bytes));
  std::free(h->raw);
}

int64_t allocated_bytes() { return g_bytes.load(); }

namespace {
constexpr size_t kHuge = size_t(2) << 20;
std::mutex g_huge_mu;
std::vector<std::pair<void*, size_t>> g_huge;  // live huge allocations and their sizes
struct FileMap {
  const char* p;
  size_t bytes;
  int fd;  // -1: not readable with pread
};
std::mutex g_map_mu;
std::vector<FileMap> g_maps;  // registered file mappings
}  // namespace

void* huge_malloc(size_t bytes) {
  if (bytes == 0 || bytes > physical_bytes()) return nullptr;
  void* p = nullptr;
  if (posix_memalign(&p, kHuge, bytes) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
  // whole huge pages only: a last partial one would be backed (and counted in
  // RSS) in full; advisory, ignored where THP is off
  if (bytes >= kHuge) ::madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
#endif
  try {
    std::lock_guard<std::mutex> lock(g_huge_mu);
    g_huge.emplace_back(p, bytes);
  } catch (...) {
    std::free(p);
    return nullptr;
  }
  g_bytes.fetch_add(int64_t(bytes));
  return p;
}

void huge_free(void* p) {
  if (!p) return;
  {
    std::lock_guard<std::mutex> lock(g_huge_mu);
    for (auto& e : g_huge)
      if (e.first == p) {
        g_bytes.fetch_sub(int64_t(e.second));
        e = g_huge.back();
        g_huge.pop_back();
        break;
      }
  }
  std::free(p);
}

void register_file_mapping(const void* p, size_t bytes, int fd) {
  std::lock_guard<std::mutex> lock(g_map_mu);
  try {
    g_maps.push_back(FileMap{static_cast<const char*>(p), bytes, fd});
  } catch (...) {
    // unregistered: its pages are simply never released early, nor read with pread
    if (fd >= 0) ::close(fd);
  }
}

void unregister_file_mapping(const void* p) {
  std::lock_guard<std::mutex> lock(g_map_mu);
  for (auto& e : g_maps)
    if (e.p == p) {
      if (e.fd >= 0) ::close(e.fd);
      e = g_maps.back();
      g_maps.pop_back();
      return;
    }
}

void release_file_pages(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(g_map_mu);  // held: the mapping cannot go away meanwhile
  for (const auto& e : g_maps)
    if (c >= e.p && c + bytes <= e.p + e.bytes) {
      const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
      const uintptr_t lo = (reinterpret_cast<uintptr_t>(c) + page - 1) / page * page;
      const uintptr_t hi = (reinterpret_cast<uintptr_t>(c) + bytes) / page * page;
      // private, never written: the pages are dropped, and read again from the file if touched
      if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
      return;
    }
}

bool read_file_bytes(const void* p, size_t bytes, void* dst) {
  const char* c = static_cast<const char*>(p);
  int fd = -1;
  off_t at = 0;
  {
    // the fd is used outside the lock: the caller holds the mapping (it reads
    // from it), so it is not unregistered meanwhile
    std::lock_guard<std::mutex> lock(g_map_mu);
    for (const auto& e : g_maps)
      if (c >= e.p && c + bytes <= e.p + e.bytes) {
        fd = e.fd;
        at = off_t(c - e.p);
        break;
      }
  }
  if (fd < 0) return false;
  char* d = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t r = ::pread(fd, d, bytes, at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    d += r;
    at += r;
    bytes -= size_t(r);
  }
  return true;
}

}  // namespace sparq
