// ggml-ffi.ts - ggml's own quantizer (ggml_quantize_chunk, what llama.cpp's
// llama_model_quantize calls per tensor) and llama_model_quantize itself
// through an FFI, for checking that sparq writes what llama.cpp writes. Neither is a dependency of sparq:
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

/** node-llama-cpp's prebuilt binaries folder for this platform, or null */
function binsDir(): string | null {
  if (process.env.SPARQ_GGML_LIB) return path.dirname(process.env.SPARQ_GGML_LIB);
  const plat = `${process.platform}-${process.arch}`;
  for (const dir of [...(require.resolve.paths('node-llama-cpp') ?? []), path.join(process.cwd(), 'node_modules')]) {
    const bins = path.join(dir, '@node-llama-cpp', plat, 'bins', plat);
    if (fs.existsSync(path.join(bins, 'libggml-base.so'))) return bins;
  }
  return null;
}
function findLib(): string | null {
  if (process.env.SPARQ_GGML_LIB) return process.env.SPARQ_GGML_LIB;
  const bins = binsDir();
  return bins ? path.join(bins, 'libggml-base.so') : null;
}

type Koffi = {
  load(p: string): { func(sig: string): (...a: unknown[]) => unknown };
  struct(name: string, fields: Record<string, string>): unknown;
  array(type: string, n: number): string;
};
function koffiOrNull(): Koffi | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('koffi') as Koffi;
  } catch {
    return null;
  }
}

/** llama.cpp's file quantizer: `inp` (a GGUF) to `out` as llama_ftype `ftype` (2 Q4_0, 7 Q8_0, 15 Q4_K_M, 18 Q6_K ...), `pure`: every tensor that type */
export type LlamaQuantize = (inp: string, out: string, ftype: number, pure: boolean) => void;

export function loadLlamaQuantize(): { quantize: LlamaQuantize | null; why: string } {
  const bins = binsDir(), koffi = koffiOrNull();
  if (!bins || !koffi) return { quantize: null, why: 'node-llama-cpp and koffi are not installed: npm install --no-save node-llama-cpp@3 koffi' };
  const name = fs.readdirSync(bins).find((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f));
  if (!name) return { quantize: null, why: `no libllama in ${bins}` };
  const lib = koffi.load(path.join(bins, name));
  // llama_model_quantize_params: its leading fields (stable across llama.cpp versions), then room
  // for the rest (pointers, sizes), which the library's own defaults fill
  koffi.struct('sparq_quantize_params', {
    nthread: 'int32_t', ftype: 'int32_t', output_tensor_type: 'int32_t', token_embedding_type: 'int32_t',
    allow_requantize: 'bool', quantize_output_tensor: 'bool', only_copy: 'bool', pure: 'bool', rest: koffi.array('uint8_t', 256),
  });
  const defaults = lib.func('sparq_quantize_params llama_model_quantize_default_params()');
  const run = lib.func('uint32_t llama_model_quantize(const char *inp, const char *out, const sparq_quantize_params *params)');
  // llama.cpp logs every tensor to stderr: the call runs with fd 2 on /dev/null
  const libc = koffi.load('libc.so.6');
  const dup = libc.func('int dup(int fd)'), dup2 = libc.func('int dup2(int a, int b)'), close = libc.func('int close(int fd)');
  const quiet = <T>(f: () => T): T => {
    const saved = Number(dup(2)), devnull = fs.openSync('/dev/null', 'w');
    dup2(devnull, 2);
    try {
      return f();
    } finally {
      dup2(saved, 2);
      close(saved);
      fs.closeSync(devnull);
    }
  };
  return {
    why: '',
    quantize(inp, out, ftype, pure) {
      const p = defaults() as Record<string, unknown>;
      p.ftype = ftype;
      p.pure = pure;
      p.nthread = 2;
      const rc = Number(quiet(() => run(inp, out, p)));
      if (rc !== 0) throw new Error(`llama_model_quantize(${inp}, ftype ${ftype}) failed: ${rc}`);
    },
  };
}

export function loadGgml(): { lib: GgmlLib | null; why: string } {
  const file = findLib();
  if (!file) return { lib: null, why: 'node-llama-cpp (libggml-base.so) is not installed: npm install --no-save node-llama-cpp@3 koffi' };
  const koffi = koffiOrNull();
  if (!koffi) return { lib: null, why: 'koffi is not installed: npm install --no-save koffi' };
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
