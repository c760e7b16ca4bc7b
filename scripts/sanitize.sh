#!/usr/bin/env bash
# sanitize.sh - the native tests and a subset of the JS tests under
# AddressSanitizer + UndefinedBehaviorSanitizer (any finding aborts), in their
# own CPU-only, checked build (build-asan/: the addon and its emulated twin
# sparq_emu.node, test_kernels, test_ops and their emulated-core builds,
# test_emulated_isa, fuzz_native). Node is not instrumented, so libasan is
# preloaded and the addon is chosen with SPARQ_ADDON.
set -euo pipefail
cd "$(dirname "$0")/.."
npx cmake-js compile -O build-asan --CDSPARQ_CUDA=OFF --CDSPARQ_SANITIZE=ON --CDSPARQ_BUILD_TESTS=ON
ctest --test-dir build-asan -j 2 --output-on-failure
asan="$(g++ -print-file-name=libasan.so)"
unset SPARQ_EXPECT_CUDA  # this build has no CUDA
# --no-config: only these files (.mocharc.json would add the whole suite); RSS bounds
# do not hold under ASan's quarantine, so those checks are skipped (SPARQ_ASAN=1)
LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
SPARQ_ADDON="$PWD/build-asan/Release/sparq.node" SPARQ_ASAN=1 SPARQ_FUZZ_CASES="${SPARQ_FUZZ_CASES:-600}" \
  npx mocha --no-config --node-option import=tsx --node-option expose-gc --timeout 600000 test/tensor.test.ts test/errors.test.ts test/gemm.test.ts test/small_ops.test.ts test/sparse.test.ts \
    test/q4.test.ts test/linear_formats.test.ts test/cuda.test.ts test/model.test.ts test/save_model.test.ts test/fuzz.test.ts \
    test/concurrency.test.ts test/attention.test.ts test/stress.test.ts test/ggml_quants.test.ts test/gguf_types.test.ts \
    --grep 'O\(t\*d\) extra memory' --invert
# The Qwen2 / Qwen3 / Llama 3.1 forward paths (biases, q / k head norms, rope factors),
# their save and reload (not the llama.cpp comparisons: another native library)
LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
SPARQ_ADDON="$PWD/build-asan/Release/sparq.node" SPARQ_ASAN=1 \
  npx mocha --no-config --node-option import=tsx --node-option expose-gc --timeout 600000 test/archs.test.ts \
    --grep 'load as|saveModel keeps'
# The per-path JS tests on the emulated addon: AVX-VNNI, AVX-512 VNNI and AMX run
# with emulated intrinsics (the hardware ones ran above), through the addon.
LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
SPARQ_ADDON="$PWD/build-asan/Release/sparq_emu.node" SPARQ_ASAN=1 SPARQ_EXPECT_EMULATED=1 \
  npx mocha --no-config --node-option import=tsx --node-option expose-gc --timeout 600000 test/build.test.ts test/gemm.test.ts \
    test/q4.test.ts test/sparse.test.ts test/attention.test.ts test/small_ops.test.ts test/ggml_quants.test.ts \
    --grep 'emulated intrinsics|emulates no ISA path'
