// attention.cpp - the attention driver: checks the arguments, cuts the work
// into tasks (one key/value head x a block of query positions x a range of
// keys), runs them on the pool through the table's kernel, then normalises
// (or, when keys were split across tasks, merges the partial softmaxes).
// Also the KV store (f32 / f16 / int8 rows) and the materialising version
// used for comparison.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "dispatch.h"
#include "kernels.h"
#include "sparq/sparq.h"
#include "thread_pool.h"

namespace sparq {

namespace {

constexpr int64_t kTaskRows = 48;        // query rows per task (all heads of a group together)
constexpr int64_t kMinSplitKeys = 256;   // smallest key range worth its own task
constexpr int64_t kMaxKeys = int64_t(1) << 24;

// Per-thread scratch, grown on demand and kept for the thread's lifetime.
float* scratch(int64_t floats) {
  thread_local std::vector<float> buf;
  if (int64_t(buf.size()) < floats + 16) buf.resize(size_t(floats + 16));
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

Error check(const AttentionArgs& a, const char* op) {
  auto bad = [&](const std::string& m) { return Error::make(Status::invalid_argument, std::string(op) + ": " + m); };
  if (!a.q || !a.out || !a.kv.k || !a.kv.v) return bad("q, k, v and out are required");
  if (a.b < 1 || a.hq < 1 || a.tq < 1 || a.d < 1 || a.hkv < 1 || a.tk < 1)
    return bad("every dimension must be at least 1");
  if (a.hq % a.hkv) return bad("query heads (" + std::to_string(a.hq) + ") must be a multiple of key/value heads (" +
                               std::to_string(a.hkv) + ")");
  if (a.tk > a.kv.cap) return bad("key length exceeds the key/value capacity");
  if (a.tk > kMaxKeys) return bad("at most 2^24 keys are supported");
  if (a.kv.type == KvType::i8 && (!a.kv.k_scale || !a.kv.v_scale)) return bad("int8 keys/values need their scales");
  if (!std::isfinite(a.scale)) return bad("scale must be finite");
  if (!a.q_len) {
    if (a.k_len || a.kv_index) return bad("k_len and kv_index need q_len (a ragged batch)");
    return Error{};
  }
  if (!a.k_len) return bad("a ragged batch needs k_len beside q_len");
  if (a.mask) return bad("a ragged batch takes no mask");
  const int64_t entries = a.kv_entries ? a.kv_entries : a.b;
  if (entries < 1) return bad("kv_entries must be >= 1");
  int64_t sum = 0, kmax = 0;
  for (int64_t i = 0; i < a.b; ++i) {
    if (a.q_len[i] < 1 || a.q_len[i] > a.tq) return bad("sequence " + std::to_string(i) + ": q_len must be in [1, tq]");
    if (a.k_len[i] < 1 || a.k_len[i] > a.kv.cap)
      return bad("sequence " + std::to_string(i) + ": k_len must be in [1, the key/value capacity]");
    const int64_t e = a.kv_index ? a.kv_index[i] : i;
    if (e < 0 || e >= entries) return bad("sequence " + std::to_string(i) + ": kv_index is outside [0, kv_entries)");
    sum += a.q_len[i];
    kmax = std::max(kmax, a.k_len[i]);
  }
  if (sum != a.tq) return bad("tq (" + std::to_string(a.tq) + ") must be the sum of q_len (" + std::to_string(sum) + ")");
  if (kmax != a.tk) return bad("tk must be the largest k_len");
  return Error{};
}

// One sequence of the batch: its query rows, keys, cache entry, and where its
// [hq, tq, d] queries (and outputs) start in q (out).
struct Seq {
  int64_t tq, tk, kv, qoff, br, nqb;
};
// A task's (sequence, key/value head, block of query positions).
struct Task {
  int32_t seq, kvh, qb;
};

}  // namespace

Error attention(const AttentionArgs& a) {
  if (Error e = check(a, "attention"); !e.ok()) return e;
  const KernelTable kt = kernels();
  const int64_t g = a.hq / a.hkv, d = a.d;
  // The sequences (b of tq each, or ragged), and the tasks: per sequence its key /
  // value heads outermost, so that consecutive tasks share one head's keys and
  // values in cache; within a head the last query blocks (most keys when causal)
  // come first.
  std::vector<Seq> seqs(size_t(a.b));
  int64_t base = 0, rows_max = 0, qoff = 0;
  double work = 0;  // multiply-adds over all sequences
  for (int64_t i = 0; i < a.b; ++i) {
    Seq& q = seqs[size_t(i)];
    q.tq = a.q_len ? a.q_len[i] : a.tq;
    q.tk = a.q_len ? a.k_len[i] : a.tk;
    q.kv = a.kv_index ? a.kv_index[i] : i;
    q.qoff = qoff;
    qoff += a.hq * q.tq * d;
    q.br = std::min(q.tq, std::max<int64_t>(1, (kTaskRows + g - 1) / g));  // positions per task
    q.nqb = (q.tq + q.br - 1) / q.br;
    base += a.hkv * q.nqb;
    rows_max = std::max(rows_max, g * q.br);
    work += double(a.hq) * double(q.tq) * double(q.tk) * double(d);
  }
  std::vector<Task> tasks;
  tasks.reserve(size_t(base));
  for (int64_t i = 0; i < a.b; ++i)
    for (int64_t kvh = 0; kvh < a.hkv; ++kvh)
      for (int64_t qb = seqs[size_t(i)].nqb - 1; qb >= 0; --qb) tasks.push_back({int32_t(i), int32_t(kvh), int32_t(qb)});
  const int64_t threads = num_threads();
  int64_t nsplit = 1;
  if (base < 2 * threads)
    nsplit = std::max<int64_t>(1, std::min((4 * threads + base - 1) / base, a.tk / kMinSplitKeys));
  const int64_t es = kv_elem_size(a.kv.type);

  // Partial results when the keys of one row are split over several tasks.
  std::vector<float> po, pm, pl;
  if (nsplit > 1) {
    po.resize(size_t(base * nsplit * rows_max * d));
    pm.resize(size_t(base * nsplit * rows_max));
    pl.resize(size_t(base * nsplit * rows_max));
  }
  // causal: query p of a sequence sees keys j <= p + (tk - tq) (aligned bottom-right)
  auto limit_of = [&](const Seq& q, int64_t p) -> int64_t {
    return a.causal ? std::clamp<int64_t>(p + q.tk - q.tq + 1, 0, q.tk) : q.tk;
  };

  // Tiny problems (small models decoding) run on the calling thread: a pool
  // wake-up costs more than the arithmetic.
  const bool inline_run = work < double(1 << 16);
  auto run_tasks = [&](int64_t count, const std::function<void(int64_t)>& fn) {
    if (inline_run) {
      for (int64_t i = 0; i < count; ++i) fn(i);
    } else {
      parallel_for(count, fn);
    }
  };
  run_tasks(base * nsplit, [&](int64_t t) {
    const int64_t s = t % nsplit, bt = t / nsplit;
    const Task& tk = tasks[size_t(bt)];
    const Seq& q = seqs[size_t(tk.seq)];
    const int64_t bi = tk.seq, kvh = tk.kvh, qb = tk.qb;
    const int64_t p0 = qb * q.br, p1 = std::min(q.tq, p0 + q.br), np = p1 - p0, rows = g * np;

    // Scratch: kernel work, then o [rows, d], m, l, query / mask row pointers, limits.
    auto up16 = [](int64_t n) { return (n + 15) / 16 * 16; };
    const int64_t wf = up16(attn_work_floats(rows, d)), of = up16(rows * d), rf = up16(rows);
    float* w = scratch(wf + of + 2 * rf + 6 * rf);
    float* o = w + wf;
    float* m = o + of;
    float* l = m + rf;
    const float** qp = reinterpret_cast<const float**>(l + rf);  // 2 floats per pointer
    const float** mp = qp + rf;
    int64_t* lim = reinterpret_cast<int64_t*>(mp + rf);
    for (int64_t hi = 0; hi < g; ++hi) {
      const int64_t h = kvh * g + hi;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t r = hi * np + (p - p0);
        qp[r] = a.q + q.qoff + (h * q.tq + p) * d;
        lim[r] = limit_of(q, p);
        mp[r] = a.mask ? a.mask + bi * a.mask_sb + h * a.mask_sh + p * a.tk : nullptr;
      }
    }
    // Keys any row of this task can see, cut into nsplit ranges of whole tiles.
    const int64_t kmax = limit_of(q, p1 - 1);
    const int64_t tiles = (kmax + kAttnBlock - 1) / kAttnBlock;
    const int64_t j0 = std::min(kmax, (tiles * s / nsplit) * kAttnBlock);
    const int64_t j1 = std::min(kmax, (tiles * (s + 1) / nsplit) * kAttnBlock);

    AttnTaskArgs ta;
    ta.q = qp;
    ta.scale = a.scale;
    ta.rows = rows;
    ta.d = d;
    ta.limit = lim;
    ta.mask = a.mask ? mp : nullptr;
    ta.type = a.kv.type;
    const int64_t row0 = (q.kv * a.hkv + kvh) * a.kv.cap;
    ta.k = static_cast<const char*>(a.kv.k) + row0 * d * es;
    ta.v = static_cast<const char*>(a.kv.v) + row0 * d * es;
    if (a.kv.type == KvType::i8) {
      ta.k_scale = a.kv.k_scale + row0;
      ta.v_scale = a.kv.v_scale + row0;
    }
    ta.j0 = j0;
    ta.j1 = j1;
    ta.work = w;
    if (nsplit == 1) {
      ta.o = o; ta.m = m; ta.l = l;
    } else {
      const int64_t pi = bt * nsplit + s;
      ta.o = po.data() + pi * rows_max * d;
      ta.m = pm.data() + pi * rows_max;
      ta.l = pl.data() + pi * rows_max;
    }
    kt.attn(ta);
    if (nsplit > 1) return;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t hi = r / np, p = p0 + r % np;
      float* dst = a.out + q.qoff + ((kvh * g + hi) * q.tq + p) * d;
      const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
      for (int64_t i = 0; i < d; ++i) dst[i] = o[r * d + i] * inv;
    }
  });
  if (nsplit == 1) return Error{};

  // Merge: o = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, M = max_s m_s.
  run_tasks(base, [&](int64_t bt) {
    const Task& tk = tasks[size_t(bt)];
    const Seq& q = seqs[size_t(tk.seq)];
    const int64_t p0 = tk.qb * q.br, np = std::min(q.tq, p0 + q.br) - p0;
    for (int64_t r = 0; r < g * np; ++r) {
      const int64_t hi = r / np, p = p0 + r % np;
      float* dst = a.out + q.qoff + ((tk.kvh * g + hi) * q.tq + p) * d;
      float mx = -INFINITY;
      for (int64_t s = 0; s < nsplit; ++s) mx = std::max(mx, pm[size_t((bt * nsplit + s) * rows_max + r)]);
      std::fill(dst, dst + d, 0.f);
      if (mx == -INFINITY) continue;
      double lsum = 0;
      for (int64_t s = 0; s < nsplit; ++s) {
        const int64_t pi = bt * nsplit + s;
        const float ms = pm[size_t(pi * rows_max + r)];
        if (ms == -INFINITY) continue;
        const float wgt = std::exp(ms - mx);
        lsum += double(wgt) * pl[size_t(pi * rows_max + r)];
        const float* os = po.data() + (pi * rows_max + r) * d;
        for (int64_t i = 0; i < d; ++i) dst[i] += wgt * os[i];
      }
      const float inv = lsum > 0 ? float(1.0 / lsum) : 0.f;
      for (int64_t i = 0; i < d; ++i) dst[i] *= inv;
    }
  });
  return Error{};
}

Error attention_naive(const AttentionArgs& a) {
  if (Error e = check(a, "attention_naive"); !e.ok()) return e;
  if (a.kv.type != KvType::f32) return Error::make(Status::unsupported, "attention_naive: f32 keys/values only");
  if (a.q_len) return Error::make(Status::unsupported, "attention_naive: no ragged batches");
  const int64_t g = a.hq / a.hkv, d = a.d, tq = a.tq, tk = a.tk;
  std::vector<float> s, qs(size_t(tq * d));
  try {
    s.resize(size_t(tq * tk));
  } catch (const std::bad_alloc&) {
    return Error::make(Status::out_of_memory, "attention_naive: cannot allocate the score matrix");
  }
  for (int64_t bi = 0; bi < a.b; ++bi)
    for (int64_t h = 0; h < a.hq; ++h) {
      const int64_t kvrow = (bi * a.hkv + h / g) * a.kv.cap * d;
      const float* k = static_cast<const float*>(a.kv.k) + kvrow;
      const float* v = static_cast<const float*>(a.kv.v) + kvrow;
      const float* q = a.q + (bi * a.hq + h) * tq * d;
      for (int64_t i = 0; i < tq * d; ++i) qs[size_t(i)] = q[i] * a.scale;
      if (Error e = linear_f32(qs.data(), tq, d, k, tk, nullptr, s.data()); !e.ok()) return e;
      for (int64_t i = 0; i < tq; ++i)
        for (int64_t j = 0; j < tk; ++j) {
          float& x = s[size_t(i * tk + j)];
          if (a.mask) x += a.mask[bi * a.mask_sb + h * a.mask_sh + i * tk + j];
          if (a.causal && j > i + tk - tq) x = -INFINITY;
        }
      if (Error e = softmax(s.data(), tq, tk, s.data()); !e.ok()) return e;
      if (Error e = matmul_f32(s.data(), tq, tk, v, d, nullptr, a.out + (bi * a.hq + h) * tq * d); !e.ok()) return e;
    }
  return Error{};
}

Error kv_store(const float* src, int64_t b, int64_t h, int64_t t, int64_t d, KvType type, void* dst, float* scale,
               int64_t cap, int64_t pos) {
  if (!src || !dst || (type == KvType::i8 && !scale))
    return Error::make(Status::invalid_argument, "kv_store: source, destination and (int8) scales are required");
  if (b < 1 || h < 1 || t < 1 || d < 1 || pos < 0 || pos + t > cap)
    return Error::make(Status::invalid_argument, "kv_store: rows [" + std::to_string(pos) + ", " +
                                                     std::to_string(pos + t) + ") do not fit the capacity " +
                                                     std::to_string(cap));
  const KernelTable kt = kernels();
  const int64_t rows = b * h * t, grain = std::max<int64_t>(1, 16384 / d);
  const int64_t tasks = std::min<int64_t>((rows + grain - 1) / grain, num_threads() * 4);
  parallel_for(tasks, [&](int64_t task) {
    for (int64_t r = rows * task / tasks; r < rows * (task + 1) / tasks; ++r) {
      const int64_t bh = r / t, row = bh * cap + pos + r % t;
      const float* x = src + r * d;
      switch (type) {
        case KvType::f32: std::memcpy(static_cast<float*>(dst) + row * d, x, size_t(d) * 4); break;
        case KvType::f16: {
          kt.to_half(x, static_cast<uint16_t*>(dst) + row * d, d);
          break;
        }
        case KvType::i8: {
          int8_t* y = static_cast<int8_t*>(dst) + row * d;
          float mx = 0.f;
          for (int64_t i = 0; i < d; ++i) mx = std::max(mx, std::fabs(x[i]));
          const float s = mx / 127.f, inv = mx > 0.f ? 127.f / mx : 0.f;
          for (int64_t i = 0; i < d; ++i) {
            const float qv = std::nearbyint(x[i] * inv);  // NaN (from inf / NaN input) stores 0
            y[i] = int8_t(qv > 127.f ? 127.f : qv < -127.f ? -127.f : qv == qv ? qv : 0.f);
          }
          scale[row] = s;
          break;
        }
      }
    }
  });
  return Error{};
}

}  // namespace sparq
