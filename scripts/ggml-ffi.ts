// ggml-ffi.ts - ggml's own quantizer (ggml_quantize_chunk, what llama.cpp's
// llama_model_quantize calls per tensor) through an FFI, for checking that
// sparq writes the blocks llama.cpp writes. Neither is a dependency of sparq:
//   npm install --no-save node-llama-cpp@3 koffi
// (or SPARQ_GGML_LIB=/path/to/libggml-base.so). Returns null when either is
// missing, with the reason in `why`.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface GgmlLib {
  path: string;
  /** ggml_quantize_chunk(type, src, dst, 0, rows, k, null): the bytes ggml writes for `rows` rows of k values */
  quantize(type: number, src: Float32Array, rows: number, k: number, bytes: number): Uint8Array;
}

function findLib(): string | null {
  if (process.env.SPARQ_GGML_LIB) return process.env.SPARQ_GGML_LIB;
  const plat = `${process.platform}-${process.arch}`;
  for (const dir of [...(require.resolve.paths('node-llama-cpp') ?? []), path.join(process.cwd(), 'node_modules')]) {
    const lib = path.join(dir, '@node-llama-cpp', plat, 'bins', plat, 'libggml-base.so');
    if (fs.existsSync(lib)) return lib;
  }
  return null;
}

export function loadGgml(): { lib: GgmlLib | null; why: string } {
  const file = findLib();
  if (!file) return { lib: null, why: 'node-llama-cpp (libggml-base.so) is not installed: npm install --no-save node-llama-cpp@3 koffi' };
  let koffi: { load(p: string): { func(sig: string): (...a: unknown[]) => unknown } };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    koffi = require('koffi') as typeof koffi;
  } catch {
    return { lib: null, why: 'koffi is not installed: npm install --no-save koffi' };
  }
  const lib = koffi.load(file);
  const chunk = lib.func('size_t ggml_quantize_chunk(int type, const float *src, _Out_ uint8_t *dst, int64_t start, int64_t nrows, int64_t n_per_row, const float *imatrix)');
  return {
    why: '',
    lib: {
      path: file,
      quantize(type, src, rows, k, bytes) {
        const out = new Uint8Array(bytes);
        const n = Number(chunk(type, src, out, 0, rows, k, null));
        if (n !== bytes) throw new Error(`ggml_quantize_chunk wrote ${n} bytes, expected ${bytes}`);
        return out;
      },
    },
  };
}
