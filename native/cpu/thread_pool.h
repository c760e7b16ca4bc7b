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
// Runs fn(begin, end) over [0, n) in guided ranges, for GEMVs that stream a weight
// from DRAM: each pool thread takes 1 / (2 x threads) of what is still left,
// rounded up to a multiple of `unit`, at least `least` (a multiple of `unit`), so
// ranges start large and shrink toward the end. Each range start costs a DRAM
// stream's ramp-up (2048 x 2048 Q4_K x16, 2 threads: 32 even ranges 48.9-61.3 us,
// 4 ranges 42.9-48.9); the small last ranges even out a thread the VM runs late.
// One range of all of [0, n) on the calling thread when there is work for one.
void parallel_ranges(int64_t n, int64_t unit, int64_t least, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace sparq
