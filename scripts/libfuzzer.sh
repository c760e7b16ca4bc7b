#!/usr/bin/env bash
# libfuzzer.sh [SECONDS] - native/test/fuzz_native.cpp as a coverage-guided
# libFuzzer binary (clang, ASan + UBSan, the library instrumented for
# coverage), run for a bounded time (default 60 s) from a seed corpus of
# inputs built from valid weights. Installs clang from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! command -v clang++ >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSPARQ_CUDA=OFF -DSPARQ_SANITIZE=ON -DSPARQ_LIBFUZZER=ON \
  -DSPARQ_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-fuzz --target fuzz_native -j 2
mkdir -p build-fuzz/corpus
SPARQ_FUZZ_SEED_CORPUS=build-fuzz/corpus ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./build-fuzz/fuzz_native -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 build-fuzz/corpus 2>&1 | tail -25
