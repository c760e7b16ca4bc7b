// thread_pool.h - one persistent pool shared by every op. parallel_for may be
// called from several threads at once (concurrent async ops): each caller
// works on its own job too, so a job always makes progress.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace sparq {

// Physical cores usable by this process (affinity mask, SMT siblings folded).
int physical_cores();
// Pool size including the calling thread (>= 1).
int num_threads();
// Why SPARQ_THREADS was not used (empty when it was, or is unset).
const std::string& threads_env_error();
// Resize the pool (1..1024). Safe while other ops run.
void set_num_threads(int n);
// Runs fn(t) for t in [0, tasks), spread over the pool and the caller.
void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn);

}  // namespace sparq
