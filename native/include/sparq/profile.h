// sparq/profile.h - time spent per op class in the model's forward pass, for
// `bench e2e --profile`. Off by default: a scope then costs one relaxed load.
// The classes are additive except kJoin, the time callers of parallel_for spent
// outside their own tasks (starting the job, then waiting for the helpers'
// last tasks), which is part of whichever op ran it.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

namespace sparq::prof {

enum Op : int {
  kEmbed,       // embedding rows
  kNorm,        // RMSNorms (attention, FFN, q/k heads)
  kQkv,         // q | k | v linears (+ biases)
  kHeads,       // token-major <-> head-major copies
  kRope,
  kKvStore,     // appending k, v to the cache
  kAttention,   // attention over the cache
  kWo,          // attention output linear
  kFfnUp,       // gate | up linears
  kSwiglu,
  kFfnDown,     // down linear
  kResidual,    // residual adds
  kClassifier,  // final norm + output linear
  kForward,     // the whole forward call
  kJoin,        // parallel_for outside the caller's own tasks (inside the ops above)
  kOps
};

const char* op_name(int op);
void enable(bool on);
bool enabled();
// Nanoseconds and counts per class since the last reset; reset zeroes them.
void read(int64_t ns[kOps], int64_t calls[kOps], bool reset);

extern std::atomic<bool> g_on;
void add(Op op, int64_t ns);
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Adds the time from construction to destruction to `op` while profiling is on.
class Scope {
 public:
  explicit Scope(Op op, bool timed = true) : op_(op), t0_(timed && g_on.load(std::memory_order_relaxed) ? now_ns() : -1) {}
  ~Scope() {
    if (t0_ >= 0) add(op_, now_ns() - t0_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  // Ends the current class's interval and starts one of `op`.
  void next(Op op) {
    if (t0_ >= 0) {
      const int64_t t = now_ns();
      add(op_, t - t0_);
      t0_ = t;
    }
    op_ = op;
  }

 private:
  Op op_;
  int64_t t0_;
};

}  // namespace sparq::prof
