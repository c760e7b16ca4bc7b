# binding.gyp - CPU-only build recipe for node-gyp users (CMakeLists.txt is the
# main build). Per-ISA sources live in their own static libraries so that each
# gets its own instruction-set flags; the runtime dispatch picks the path.
# CI builds this once (scripts/build-gyp.sh) and test/build.test.ts checks
# that its source list matches CMakeLists.txt.
{
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fPIC"],
    "include_dirs": ["native/include"]
  },
  "targets": [
    {
      "target_name": "sparq_avx2",
      "type": "static_library",
      "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
      "sources": [
        "native/cpu/x86/gemm_s8_avx2.cpp",
        "native/cpu/x86/sgemm_avx2.cpp",
        "native/cpu/x86/quant_rows_avx2.cpp",
        "native/cpu/x86/ceiling_avx2.cpp",
        "native/cpu/x86/small_ops_avx2.cpp",
        "native/cpu/x86/attention_avx2.cpp",
        "native/cpu/x86/sparse_avx2.cpp",
        "native/cpu/x86/q4_avx2.cpp",
        "native/cpu/x86/quants_avx2.cpp"
      ]
    },
    {
      "target_name": "sparq_avxvnni",
      "type": "static_library",
      "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"],
      "sources": ["native/cpu/x86/gemm_s8_avxvnni.cpp", "native/cpu/x86/ceiling_avxvnni.cpp"]
    },
    {
      "target_name": "sparq_avx512",
      "type": "static_library",
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mfma", "-mf16c"],
      "sources": ["native/cpu/x86/gemm_s8_avx512vnni.cpp", "native/cpu/x86/sgemm_avx512.cpp", "native/cpu/x86/attention_avx512.cpp",
                  "native/cpu/x86/quants_avx512.cpp", "native/cpu/x86/ceiling_avx512.cpp"]
    },
    {
      "target_name": "sparq_avx512vbmi2",
      "type": "static_library",
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx512vbmi2", "-mfma", "-mf16c"],
      "sources": ["native/cpu/x86/sparse_avx512.cpp"]
    },
    {
      "target_name": "sparq_amx",
      "type": "static_library",
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mfma", "-mf16c", "-mamx-tile", "-mamx-int8"],
      "sources": ["native/cpu/x86/gemm_s8_amx.cpp"]
    },
    {
      "target_name": "sparq",
      "dependencies": ["sparq_avx2", "sparq_avxvnni", "sparq_avx512", "sparq_avx512vbmi2", "sparq_amx"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "ldflags": ["-Wl,-z,nodelete"],
      "sources": [
        "native/cpu/memory.cpp",
        "native/cpu/profile.cpp",
        "native/cpu/dispatch.cpp",
        "native/cpu/thread_pool.cpp",
        "native/cpu/gemm_s8.cpp",
        "native/cpu/sgemm.cpp",
        "native/cpu/runtime.cpp",
        "native/cpu/small_ops.cpp",
        "native/cpu/attention.cpp",
        "native/cpu/ggml_formats.cpp",
        "native/cpu/q4.cpp", "native/cpu/gptq.cpp", "native/cpu/sparse.cpp", "native/cpu/quants.cpp",
        "native/model/llama.cpp",
        "native/model/llama_save.cpp",
        "native/model/linear_formats.cpp",
        "native/model/backend_cpu.cpp",
        "native/model/backend_cuda.cpp",
        "native/model/device_linear.cpp",
        "native/cpu/cuda_stub.cpp",
        "native/cpu/ref/gemm_s8_ref.cpp",
        "native/cpu/ref/sgemm_ref.cpp",
        "native/cpu/ref/quant_rows_ref.cpp",
        "native/cpu/ref/small_ops_ref.cpp",
        "native/cpu/ref/attention_ref.cpp",
        "native/cpu/ref/sparse_ref.cpp",
        "native/cpu/ref/q4_ref.cpp",
        "native/addon/addon.cpp",
        "native/addon/tensor_ops.cpp",
        "native/addon/int8_ops.cpp",
        "native/addon/attention_ops.cpp",
        "native/addon/model_ops.cpp",
        "native/addon/file_ops.cpp",
        "native/addon/ggml_ops.cpp",
        "native/addon/sparse_ops.cpp",
        "native/addon/q4_ops.cpp",
        "native/addon/linear_ops.cpp",
        "native/addon/cuda_ops.cpp"
      ]
    }
  ]
}
