// thread_pool.cpp - persistent worker threads pulling shared jobs; the caller
// of parallel_for always participates in its own job.
#include "thread_pool.h"

#include "sparq/profile.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif

namespace sparq {

int physical_cores() {
  static const int n = [] {
    int logical = int(std::thread::hardware_concurrency());
    std::set<std::string> cores;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      logical = CPU_COUNT(&set);
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (!CPU_ISSET(c, &set)) continue;
        std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/thread_siblings_list");
        std::string s;
        if (f && std::getline(f, s)) cores.insert(s); else cores.insert("cpu" + std::to_string(c));
      }
    }
#endif
    int n = cores.empty() ? logical : int(cores.size());
    return n > 0 ? n : 1;
  }();
  return n;
}

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t tasks;
  int max_helpers;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};
  std::atomic<int> helpers{0};
  std::mutex mu;
  std::condition_variable cv;
  std::exception_ptr error;

  // Runs tasks until none are left; returns how many this thread ran.
  void work() {
    int64_t ran = 0;
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= tasks) break;
      try {
        (*fn)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
      ++ran;
    }
    if (ran && finished.fetch_add(ran) + ran == tasks) {
      std::lock_guard<std::mutex> lock(mu);
      cv.notify_all();
    }
  }
};

class Pool {
 public:
  Pool() {
    int n = physical_cores();
    if (const char* env = std::getenv("SPARQ_THREADS"); env && *env) {
      char* end = nullptr;
      errno = 0;
      const long v = std::strtol(env, &end, 10);
      if (end == env || *end != '\0' || errno == ERANGE || v < 1 || v > 1024)
        env_error_ = std::string("SPARQ_THREADS='") + env + "' is not an integer in [1, 1024]";
      else
        n = int(v);
    }
    resize(n);
  }
  ~Pool() { stop_workers(); }

  int size() const { return size_.load(); }
  const std::string& env_error() const { return env_error_; }

  void resize(int n) {
    std::lock_guard<std::mutex> lock(resize_mu_);
    stop_workers();
    size_.store(n);
    stopping_ = false;
    for (int i = 0; i + 1 < n; ++i) workers_.emplace_back([this] { loop(); });
  }

  void run(int64_t tasks, const std::function<void(int64_t)>& fn) {
    if (tasks <= 0) return;
    const int n = size();
    if (tasks == 1 || n == 1) {
      for (int64_t t = 0; t < tasks; ++t) fn(t);
      return;
    }
    const int64_t t0 = prof::enabled() ? prof::now_ns() : -1;  // fork / join time, profiled
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->tasks = tasks;
    job->max_helpers = int(std::min<int64_t>(n - 1, tasks - 1));
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job);
      queued_.fetch_add(1, std::memory_order_release);
      pushed_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    const int64_t tw0 = t0 >= 0 ? prof::now_ns() : 0;
    job->work();
    const int64_t tw1 = t0 >= 0 ? prof::now_ns() : 0;
    // The helpers' last tasks end within microseconds of the caller's: spin for them
    // before sleeping (a futex sleep and wake-up cost tens of microseconds on a VM,
    // paid per op: ~100 ops per decoded token).
    for (int spin = 0; spin < kSpinIterations && job->finished.load(std::memory_order_acquire) != tasks; ++spin) cpu_relax();
    if (job->finished.load(std::memory_order_acquire) != tasks) {
      std::unique_lock<std::mutex> lock(job->mu);
      job->cv.wait(lock, [&] { return job->finished.load() == tasks; });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = queue_.begin(); it != queue_.end(); ++it)
        if (*it == job) {
          queue_.erase(it);
          queued_.fetch_sub(1, std::memory_order_relaxed);
          break;
        }
    }
    if (t0 >= 0) prof::add(prof::kJoin, (tw0 - t0) + (prof::now_ns() - tw1));
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void loop() {
    uint64_t seen = 0;  // jobs pushed so far that this worker has looked at
    for (;;) {
      std::shared_ptr<Job> job;
      // Spin before sleeping: decode issues many short ops back to back, and a
      // condition-variable wake-up costs tens of microseconds. The queue's lock is
      // taken only for a job pushed since the last look (or a second one queued):
      // a worker that went to sleep, or took the lock, as soon as its job ran out
      // of tasks, collided with the caller finishing the same job and paid a
      // futex sleep and wake per op (~300 futex calls per decoded token).
      for (int spin = 0;; ++spin) {
        if (stopping_flag_.load(std::memory_order_relaxed)) return;
        if (pushed_.load(std::memory_order_acquire) != seen || queued_.load(std::memory_order_acquire) > 1) {
          std::lock_guard<std::mutex> lock(mu_);
          if (stopping_) return;
          seen = pushed_.load(std::memory_order_relaxed);
          if (pick_locked(job)) break;
        }
        if (spin >= kSpinIterations) {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return stopping_ || pick_locked(job); });
          if (stopping_) return;
          seen = pushed_.load(std::memory_order_relaxed);
          break;
        }
        cpu_relax();
      }
      job->work();
    }
  }
  // Takes a job that still has tasks and room for a helper; drops exhausted ones.
  bool pick_locked(std::shared_ptr<Job>& out) {
    for (auto it = queue_.begin(); it != queue_.end();) {
      Job& j = **it;
      if (j.next.load(std::memory_order_relaxed) >= j.tasks || j.helpers.load() >= j.max_helpers) {
        it = queue_.erase(it);
        queued_.fetch_sub(1, std::memory_order_relaxed);
        continue;
      }
      j.helpers.fetch_add(1);
      out = *it;
      return true;
    }
    return false;
  }
  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      stopping_flag_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stopping_flag_.store(false);
  }

  std::mutex resize_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
  std::atomic<int> size_{1};
  std::string env_error_;  // SPARQ_THREADS that does not parse (the default size is used)
  std::atomic<int> queued_{0};  // jobs in queue_ (read without the lock by spinning workers)
  std::atomic<uint64_t> pushed_{0};  // jobs ever pushed (likewise)
  std::atomic<bool> stopping_flag_{false};
  bool stopping_ = false;
  static constexpr int kSpinIterations = 20000;  // ~50-100 us of pause instructions
};

Pool& pool() {
  // Leaked on purpose: worker threads must not be joined during static
  // destruction at process exit (the addon may unload after the loop stops).
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }

const std::string& threads_env_error() { return pool().env_error(); }
void set_num_threads(int n) { pool().resize(n < 1 ? 1 : (n > 1024 ? 1024 : n)); }
void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn) { pool().run(tasks, fn); }

void parallel_ranges(int64_t n, int64_t unit, int64_t least, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t threads = num_threads();
  const int64_t tasks = std::min<int64_t>(threads, (n + least - 1) / least);
  if (tasks <= 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  pool().run(tasks, [&](int64_t) {
    for (;;) {
      const int64_t left = n - next.load(std::memory_order_relaxed);
      if (left <= 0) return;
      const int64_t take = std::max(least, (left / (2 * threads) + unit - 1) / unit * unit);
      const int64_t j0 = next.fetch_add(take, std::memory_order_relaxed);
      if (j0 >= n) return;
      fn(j0, std::min(n, j0 + take));
    }
  });
}

}  // namespace sparq
