// scratch.h - per-op scratch reused across calls without thread_local.
//
// Node runs ops on any of libuv's worker threads (4 by default), so scratch kept
// thread_local by an op is held - and first-touched, ~10 us per 4 KiB page on
// these VMs - once per worker that ever ran it: measured +43 MiB of RSS for a 1B
// model's 512-token prefill. A call here leases one object from a free list and
// returns it when done, so the number held is the number of calls that ran at
// the same time, whatever threads they ran on.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace sparq {

template <class T>
class ScratchCache {
 public:
  class Lease {
   public:
    Lease(ScratchCache* cache, std::unique_ptr<T> v) : cache_(cache), v_(std::move(v)) {}
    Lease(Lease&& o) noexcept : cache_(o.cache_), v_(std::move(o.v_)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (v_) cache_->put(std::move(v_));
    }
    explicit operator bool() const { return v_ != nullptr; }  // false: out of memory
    T& operator*() const { return *v_; }
    T* operator->() const { return v_.get(); }

   private:
    ScratchCache* cache_;
    std::unique_ptr<T> v_;
  };

  Lease take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        std::unique_ptr<T> v = std::move(free_.back());
        free_.pop_back();
        return Lease(this, std::move(v));
      }
    }
    T* v = new (std::nothrow) T();
    return Lease(this, std::unique_ptr<T>(v));
  }

 private:
  void put(std::unique_ptr<T> v) {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      free_.push_back(std::move(v));
    } catch (const std::bad_alloc&) {
      // dropped: freed by v's destructor
    }
  }
  std::mutex mu_;
  std::vector<std::unique_ptr<T>> free_;
};

// Bytes grown on demand and never shrunk, handed out as 64-byte aligned pieces.
struct ByteScratch {
  std::vector<char> mem;
  // Points each out at a piece of its byte count; false when out of memory.
  bool carve(std::initializer_list<std::pair<size_t, void**>> parts) {
    size_t total = 64;
    for (const auto& p : parts) total += (p.first + 63) / 64 * 64;
    try {
      if (mem.size() < total) mem.resize(total);
    } catch (const std::exception&) {  // bad_alloc, length_error
      return false;
    }
    uintptr_t at = (reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~uintptr_t(63);
    for (const auto& p : parts) {
      *p.second = reinterpret_cast<void*>(at);
      at += (p.first + 63) / 64 * 64;
    }
    return true;
  }
};

inline ScratchCache<ByteScratch>& byte_scratch() {
  static auto* cache = new ScratchCache<ByteScratch>();  // never destroyed: pool threads may outlive statics
  return *cache;
}

}  // namespace sparq

