// rows.h - a call's row count as a compile-time constant, for kernels unrolled
// per row count (the decode GEMVs: one body per m = 1 .. 8, accumulators in
// registers).
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace sparq {

// Calls f(std::integral_constant<int, m>{}) for 1 <= m <= Max; nothing for other m.
//   dispatch_rows<8>(a.m, [&](auto M) { rows<decltype(M)::value>(a, j0, j1); });
template <int Max, class F>
inline void dispatch_rows(int64_t m, F&& f) {
  static_assert(Max >= 1, "at least one row");
  if constexpr (Max > 1) {
    if (m < Max) {
      dispatch_rows<Max - 1>(m, std::forward<F>(f));
      return;
    }
  }
  if (m == Max) f(std::integral_constant<int, Max>{});
}

}  // namespace sparq
