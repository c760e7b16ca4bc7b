// memory.cpp - 64-byte aligned allocations with a running byte count.
#include <atomic>
#include <cstdlib>
#include <unistd.h>

#include "sparq/sparq.h"

namespace sparq {

static std::atomic<int64_t> g_bytes{0};

// Each block carries its size in a 64-byte header so the count stays exact.
// Requests above the machine's physical memory are refused up front: with
// overcommit the OS could grant them and the first touch would kill the process.
static size_t physical_bytes() {
  static const size_t n = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(1) << 46;
  }();
  return n;
}

void* aligned_malloc(size_t bytes) {
  if (bytes > physical_bytes()) return nullptr;
  void* raw = nullptr;
  if (posix_memalign(&raw, 64, bytes + 64) != 0) return nullptr;
  *static_cast<size_t*>(raw) = bytes;
  g_bytes.fetch_add(int64_t(bytes));
  return static_cast<char*>(raw) + 64;
}

void aligned_free(void* p) {
  if (!p) return;
  void* raw = static_cast<char*>(p) - 64;
  g_bytes.fetch_sub(int64_t(*static_cast<size_t*>(raw)));
  std::free(raw);
}

int64_t allocated_bytes() { return g_bytes.load(); }

}  // namespace sparq
