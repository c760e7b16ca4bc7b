// memory.cpp - 64-byte aligned allocations with a running byte count.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
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

// Small blocks: plain malloc with the alignment done here (posix_memalign asks
// glibc for size + alignment slack, so a freed block never fits the next request
// of the same size and the heap fragments: measured, every 64 KiB tensor created
// and disposed in Node left 64 KiB of RSS behind). The 16 bytes before the
// aligned pointer hold the raw pointer and the size; an arena block's raw
// pointer has its low bit set.
struct Header {
  void* raw;
  size_t bytes;
};
static_assert(sizeof(Header) == 16, "header fits the slack");

// --- the arena ------------------------------------------------------------------
// Blocks of 64 KiB and more (tensors, outputs, KV caches, per-call GEMM panels)
// come from anonymous mappings in size classes (8 per power of two: at most
// 12.5% rounding, in address space only - pages never written are never
// backed). A freed block is kept for the next request of its class, so an op
// whose output the GC frees late, or whose scratch it allocates per call, stops
// paying the first touch of fresh pages (~10 us per 4 KiB page on these VMs)
// once the GC has handed a few blocks back. Blocks of 2 MiB and more are 2 MiB
// aligned with transparent huge pages asked for. Bounded: at most
// arena_cap() bytes are kept (SPARQ_ARENA_MIB; default 1/8 of physical memory,
// at most 1 GiB); a block unused for kIdleSeconds is unmapped by a background
// trimmer, so an idle process gives the memory back. Off under AddressSanitizer
// (its heap checks need malloc'd blocks) and with SPARQ_ARENA_MIB=0.
namespace {
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kArenaBuild = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kArenaBuild = false;
#else
constexpr bool kArenaBuild = true;
#endif
#else
constexpr bool kArenaBuild = true;
#endif
constexpr size_t kArenaMin = size_t(64) << 10;
constexpr size_t kArenaHeader = 64;  // keeps the user pointer 64-byte aligned
constexpr size_t kHugePage = size_t(2) << 20;
constexpr int kIdleSeconds = 5;

size_t arena_class(size_t bytes) {
  size_t n = bytes + kArenaHeader;
  const int lg = 63 - __builtin_clzll(uint64_t(n));
  const size_t step = std::max<size_t>(size_t(1) << (lg - 3), 4096);
  return (n + step - 1) / step * step;
}

struct CachedBlock {
  char* base;
  std::chrono::steady_clock::time_point freed;
};

struct Arena {
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<size_t, std::vector<CachedBlock>> free;  // class bytes -> blocks, last freed last
  size_t cached = 0;
  bool trimmer = false;
  std::atomic<int64_t> hits{0}, misses{0};
  size_t cap = 0;
  bool on = false;
  Arena() {
    cap = std::min<size_t>(size_t(1) << 30, physical_bytes() / 8);
    if (const char* env = std::getenv("SPARQ_ARENA_MIB"); env && *env) {
      char* end = nullptr;
      const long long v = std::strtoll(env, &end, 10);
      if (end != env && *end == '\0' && v >= 0 && v <= (1ll << 30)) cap = size_t(v) << 20;
    }
    on = kArenaBuild && cap > 0;
  }
};

Arena& arena() {
  static Arena* a = new Arena();  // leaked: blocks may be freed during static destruction
  return *a;
}

char* map_block(size_t cls) {
  if (cls < kHugePage) {
    void* p = ::mmap(nullptr, cls, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  // 2 MiB aligned: map a huge page more and cut the ends off
  void* p = ::mmap(nullptr, cls + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const uintptr_t raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t at = (raw + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
  if (at > raw) ::munmap(p, at - raw);
  const uintptr_t end = raw + cls + kHugePage;
  if (end > at + cls) ::munmap(reinterpret_cast<void*>(at + cls), end - (at + cls));
#ifdef MADV_HUGEPAGE
  ::madvise(reinterpret_cast<void*>(at), cls / kHugePage * kHugePage, MADV_HUGEPAGE);  // advisory
#endif
  return reinterpret_cast<char*>(at);
}

// Unmaps kept blocks freed before `older` (all of them with time_point::max()).
// Called with the lock held; the munmaps run with it released.
void trim_locked(Arena& a, std::chrono::steady_clock::time_point older, std::unique_lock<std::mutex>& lock) {
  std::vector<std::pair<char*, size_t>> drop;
  try {
    size_t n = 0;
    for (const auto& e : a.free)
      for (const CachedBlock& b : e.second) n += b.freed < older;
    drop.reserve(n);  // the loop below must not throw halfway through a list
  } catch (...) {
    return;  // out of memory for the list: trimmed next time
  }
  for (auto it = a.free.begin(); it != a.free.end();) {
    auto& v = it->second;
    size_t keep = 0;
    for (const CachedBlock& b : v)
      if (b.freed < older) drop.emplace_back(b.base, it->first);
      else v[keep++] = b;
    v.resize(keep);
    it = v.empty() ? a.free.erase(it) : std::next(it);
  }
  for (const auto& d : drop) a.cached -= d.second;
  lock.unlock();
  for (const auto& d : drop) ::munmap(d.first, d.second);
  lock.lock();
}

// The trimmer: wakes every second while blocks are kept, unmaps those unused for
// kIdleSeconds. Started with the first kept block; sleeps while none are.
void trim_loop(Arena& a) {
  std::unique_lock<std::mutex> lock(a.mu);
  for (;;) {
    if (a.cached == 0) {
      a.cv.wait(lock, [&] { return a.cached > 0; });
      continue;
    }
    a.cv.wait_for(lock, std::chrono::seconds(1));
    trim_locked(a, std::chrono::steady_clock::now() - std::chrono::seconds(kIdleSeconds), lock);
  }
}
}  // namespace

void* aligned_malloc(size_t bytes) {
  if (bytes > physical_bytes()) return nullptr;
  Arena& a = arena();
  if (a.on && bytes >= kArenaMin) {
    const size_t cls = arena_class(bytes);
    char* base = nullptr;
    {
      std::lock_guard<std::mutex> lock(a.mu);
      auto it = a.free.find(cls);
      if (it != a.free.end() && !it->second.empty()) {
        base = it->second.back().base;
        it->second.pop_back();
        a.cached -= cls;
      }
    }
    if (base) a.hits.fetch_add(1, std::memory_order_relaxed);
    else {
      a.misses.fetch_add(1, std::memory_order_relaxed);
      base = map_block(cls);
      if (!base) return nullptr;
    }
    Header* h = reinterpret_cast<Header*>(base + kArenaHeader) - 1;
    h->raw = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(base) | 1);
    h->bytes = bytes;
    g_bytes.fetch_add(int64_t(bytes));
    return base + kArenaHeader;
  }
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
  const uintptr_t raw = reinterpret_cast<uintptr_t>(h->raw);
  if (!(raw & 1)) {
    std::free(h->raw);
    return;
  }
  char* base = reinterpret_cast<char*>(raw & ~uintptr_t(1));
  const size_t cls = arena_class(h->bytes);
  Arena& a = arena();
  {
    std::unique_lock<std::mutex> lock(a.mu);
    if (a.cached + cls <= a.cap) {
      try {
        if (!a.trimmer) {  // blocks are kept only while a trimmer can give them back
          std::thread(trim_loop, std::ref(a)).detach();
          a.trimmer = true;
        }
        a.free[cls].push_back(CachedBlock{base, std::chrono::steady_clock::now()});
        a.cached += cls;
        a.cv.notify_one();
        return;
      } catch (...) {
        // no thread or no room for the list entry (nothing was kept): unmapped below
      }
    }
  }
  ::munmap(base, cls);
}

void arena_trim() {
  Arena& a = arena();
  std::unique_lock<std::mutex> lock(a.mu);
  trim_locked(a, std::chrono::steady_clock::time_point::max(), lock);
}

ArenaStats arena_stats() {
  Arena& a = arena();
  std::lock_guard<std::mutex> lock(a.mu);
  return ArenaStats{a.on, int64_t(a.cap), int64_t(a.cached), a.hits.load(), a.misses.load()};
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
