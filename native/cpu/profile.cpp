// profile.cpp - the per-op-class counters behind sparq/profile.h.
#include "sparq/profile.h"

namespace sparq::prof {

std::atomic<bool> g_on{false};

namespace {
std::atomic<int64_t> g_ns[kOps];
std::atomic<int64_t> g_calls[kOps];
const char* const kNames[kOps] = {"embed", "norm", "qkv", "heads", "rope", "kv_store", "attention", "wo",
                                  "ffn_up", "swiglu", "ffn_down", "residual", "classifier", "forward", "join"};
}  // namespace

const char* op_name(int op) { return op >= 0 && op < kOps ? kNames[op] : "?"; }
void enable(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool enabled() { return g_on.load(std::memory_order_relaxed); }

void add(Op op, int64_t ns) {
  g_ns[op].fetch_add(ns, std::memory_order_relaxed);
  g_calls[op].fetch_add(1, std::memory_order_relaxed);
}

void read(int64_t ns[kOps], int64_t calls[kOps], bool reset) {
  for (int i = 0; i < kOps; ++i) {
    ns[i] = reset ? g_ns[i].exchange(0) : g_ns[i].load();
    calls[i] = reset ? g_calls[i].exchange(0) : g_calls[i].load();
  }
}

}  // namespace sparq::prof
