// native.ts - loads the addon and exposes its typed surface. The only file
// that touches the binary. Order: prebuilds/<platform>-<arch>/*.node (the
// prebuilt binary shipped in the npm package), then the local build
// (build/Release via `bindings`). Every failure is collected and reported
// with what to do.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface NativeStorage {
  readonly byteLength: number;
  /** 'cuda' for device memory */
  readonly device: 'cpu' | 'cuda';
  readonly disposed: boolean;
  write(data: ArrayBufferView, byteOffset: number): void;
  read(byteOffset: number, byteLength: number): ArrayBuffer;
  dispose(): void;
}

export interface PackedMeta {
  n: number; k: number; groups: number; group: number; kPad: number; bytes: number;
  asymmetric: boolean; hasScales: boolean;
}

export interface NativePacked {
  meta(): PackedMeta;
  unpack(): { values: ArrayBuffer; scales: ArrayBuffer; zeros: ArrayBuffer };
  dispose(): void;
}

export interface NativeInfo {
  cpu: { vendor: string; brand: string; features: string[]; physicalCores: number; supportedIsas: string[]; emulatedIsas: string[] };
  kernels: { gemm_s8: string; sgemm: string; quantize_rows: string; attention: string; sparse: string };
  threads: number;
  dispatchError: string;
  cuda: { compiled: boolean; devices: number; archs: string; runtimeVersion: number; driverVersion: number; error?: string;
    deviceList: { name: string; major: number; minor: number; sms: number; memoryBytes: number; clockMHz: number; bandwidthGBs: number }[] };
  allocatedBytes: number;
  mappedBytes: number;
  arena: { on: boolean; capBytes: number; cachedBytes: number; hits: number; misses: number };
  mallocBytes: number;
}

export interface NativeQ4 {
  meta(): { n: number; k: number; group: number; bytes: number };
  dispose(): void;
}

/** A linear weight of any format of the native format table (loaded from a saved model). */
export interface NativeLinear {
  meta(): { format: string; n: number; k: number; bytes: number };
  dispose(): void;
}

/** A tensor of a saved linear, read (or mapped) for loadLinear. */
export interface SavedPart { suffix: string; dtype: string; shape: number[]; storage: NativeStorage; offset: number; bytes: number }

export interface NativeDeviceWeight {
  meta(): { n: number; k: number; kind: 'f32' | 'int8' | 'csr' | 'nm'; bytes: number };
  dispose(): void;
}

export interface NativeSparse {
  meta(): { format: 'csr' | 'bitmask' | 'nm'; n: number; k: number; nnz: number; int8: boolean; int4: boolean; group: number; N: number; M: number; bytes: number };
  toDense(out: NativeStorage, off: number): Promise<void>;
  dispose(): void;
}

type S = NativeStorage;
type Off = number;

export interface NativeBinding {
  Storage: new (byteLength: number, device?: 'cuda') => NativeStorage;
  cudaUploadPacked(packed: NativePacked, staticScale: number): Promise<NativeDeviceWeight>;
  cudaUploadSparse(sparse: NativeSparse): Promise<NativeDeviceWeight>;
  cudaLinear(x: S, xOff: Off, m: number, k: number, w: NativeDeviceWeight, bias: S | null, biasOff: Off, out: S, outOff: Off): Promise<void>;
  cudaMatmulS8(a: S, aOff: Off, m: number, k: number, b: S, bOff: Off, n: number, out: S, outOff: Off): Promise<void>;
  cudaMemInfo(): { free: number; total: number; allocated: number };
  cudaBenchGemm(m: number, n: number, k: number, group: number, reps: number): Promise<number>;
  cudaBenchAttention(b: number, hq: number, hkv: number, tq: number, tk: number, d: number, qType: number, kvType: number,
                     causal: boolean, reps: number): Promise<number>;
  Packed: new () => NativePacked;
  info(): NativeInfo;
  setIsa(name: string): void;
  setNumThreads(n: number): void;
  allocatedBytes(): number;
  trimMemory(): void;
  /** switches the forward pass's per-op-class timers (undefined: leaves them) and reads them, zeroing them when `reset` */
  profile(enable: boolean | undefined, reset: boolean): Record<string, { ns: number; calls: number }>;
  quantizeWeight(w: S, off: Off, n: number, k: number, group: number, asymmetric: boolean, sync: true): NativePacked;
  quantizeWeight(w: S, off: Off, n: number, k: number, group: number, asymmetric: boolean, sync: false): Promise<NativePacked>;
  packS8(b: S, off: Off, n: number, k: number): Promise<NativePacked>;
  dequantize(p: NativePacked, out: S, off: Off, sync: true): void;
  matmulS8(a: S, aOff: Off, m: number, k: number, b: NativePacked, out: S, outOff: Off): Promise<void>;
  linearS8(x: S, xOff: Off, m: number, k: number, w: NativePacked, bias: S | null, biasOff: Off,
           inputScale: number, out: S, outOff: Off): Promise<void>;
  matmulF32(a: S, aOff: Off, m: number, k: number, b: S, bOff: Off, n: number, bias: S | null, biasOff: Off,
            out: S, outOff: Off): Promise<void>;
  linearF32(x: S, xOff: Off, m: number, k: number, w: S, wOff: Off, n: number, bias: S | null, biasOff: Off,
            out: S, outOff: Off): Promise<void>;
  /** the wider units are 0 where the CPU lacks them */
  ceilings(dramBytes: number): Promise<{
    fp32Avx2Gops: number; int8Avx2Gops: number; fp32Avx512Gops: number; int8AvxvnniGops: number; int8Avx512vnniGops: number;
    dramReadGBs: number; threads: number;
  }>;
  /** index of the largest element (the first of equal ones), or -1 - i for the first NaN / +inf; synchronous */
  argmax(x: Float32Array): number;
  rmsnorm(x: S, xOff: Off, rows: number, d: number, w: S, wOff: Off, eps: number, out: S, outOff: Off): Promise<void>;
  softmax(x: S, xOff: Off, rows: number, n: number, out: S, outOff: Off): Promise<void>;
  swiglu(a: S, aOff: Off, b: S, bOff: Off, n: number, out: S, outOff: Off): Promise<void>;
  add(a: S, aOff: Off, b: S, bOff: Off, n: number, out: S, outOff: Off): Promise<void>;
  rope(x: S, xOff: Off, bh: number, t: number, d: number, offset: number, theta: number, neox: boolean, out: S, outOff: Off): Promise<void>;
  /** kvType 0 f32, 1 f16, 2 int8 (ks / vs: its scales), 3 bf16 (cuda); qType (cuda) 0 f32, 1 f16, 2 bf16 */
  attention(o: {
    q: S; qOff: Off; b: number; hq: number; tq: number; d: number; hkv: number; tk: number; cap: number; kvType: number;
    k: S; kOff: Off; v: S; vOff: Off; ks: S | null; ksOff: Off; vs: S | null; vsOff: Off;
    mask: S | null; maskOff: Off; maskSb: number; maskSh: number; scale: number; causal: boolean;
    out: S; outOff: Off; naive: boolean; qType?: number;
  }): Promise<void>;
  kvStore(o: {
    src: S; srcOff: Off; b: number; h: number; t: number; d: number; type: number; dst: S; dstOff: Off;
    scales: S | null; scalesOff: Off; cap: number; pos: number;
  }): Promise<void>;
  readFile(path: string, offset: number, bytes: number): Promise<NativeStorage>;
  readFile(path: string, ranges: number[]): Promise<NativeStorage>;
  mapFile(path: string): Promise<NativeStorage>;
  quantizeFile(path: string, ranges: number[], k: number): Promise<NativePacked>;
  packQ8File(path: string, ranges: number[], k: number): Promise<NativePacked>;
  widenToF32(s: S, off: Off, type: number, count: number): Promise<NativeStorage>;
  ggmlTypes(): { type: number; name: string; block: number; bytes: number; quantized: boolean; offsets: boolean }[];
  ggmlQuantize(x: S, off: Off, type: number, n: number, k: number, sync?: false): Promise<NativeStorage>;
  ggmlQuantize(x: S, off: Off, type: number, n: number, k: number, sync: true): NativeStorage;
  linearBlocks(w: S, wOff: Off, type: number, n: number, k: number, x: S, xOff: Off, m: number, out: S, outOff: Off): Promise<void>;
  createModel(config: Record<string, number | boolean>, weights: unknown): Promise<unknown>;
  /** the sparse formats' names, as the native code spells them */
  sparseFormats: string[];
  sparseFromDense(w: S, off: Off, n: number, k: number, format: string, N: number, M: number, int8: boolean, sync: true): NativeSparse;
  sparseFromDense(w: S, off: Off, n: number, k: number, format: string, N: number, M: number, int8: boolean, sync: false): Promise<NativeSparse>;
  sparseQuantize(s: NativeSparse, bits?: 4 | 8, group?: number): NativeSparse;
  sparseConcat(parts: NativeSparse[]): NativeSparse;
  gptq(w: S, off: Off, n: number, k: number, h: Float64Array, bits: number, group: number, dampening: number): Promise<{ packed?: NativePacked; q4?: NativeQ4; error: number; rtnError: number }>;
  q4Quantize(w: S, off: Off, n: number, k: number, group: number): Promise<NativeQ4>;
  q4Parts(q: NativeQ4): { nibbles: Uint8Array; scales: Float32Array; values: Int8Array };
  linearQ4(q: NativeQ4, x: S, xOff: Off, m: number, out: S, outOff: Off): Promise<void>;
  linearFormats(): { name: string; loads: boolean }[];
  linearStoredBytes(w: NativeLinear | NativePacked | NativeQ4 | NativeSparse): number;
  loadLinear(entry: object, name: string, n: number, k: number, parts: SavedPart[]): Promise<NativeLinear>;
  linearToF32(w: NativeLinear | NativePacked | NativeQ4 | NativeSparse, out: S, off: Off, sync: true): void;
  linearToF32(w: NativeLinear | NativePacked | NativeQ4 | NativeSparse, out: S, off: Off, sync?: false): Promise<void>;
  spmm(s: NativeSparse, x: S, xOff: Off, m: number, bias: S | null, biasOff: Off, out: S, outOff: Off): Promise<void>;
  stats(x: S, off: Off, count: number, bins: number, lo: number, hi: number):
    Promise<{ min: number; max: number; histogram?: Float64Array }>;
}

export const packageRoot = path.resolve(__dirname, '..');

// The prebuilt binary first; a local build (build/Release) takes over only when it is newer
// than the prebuild (a developer rebuilt after `npm run prebuild`), so a stale prebuild never
// shadows fresh native changes.
function candidates(): string[] {
  const dir = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
  let files: string[] = [];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.node')).sort((a, b) => score(b) - score(a));
  } catch {
    /* no prebuilds for this platform */
  }
  const pre = files.map((f) => path.join(dir, f));
  const local = path.join(packageRoot, 'build', 'Release', 'sparq.node');
  try {
    if (pre.length && fs.statSync(local).mtimeMs > fs.statSync(pre[0]!).mtimeMs) return [local, ...pre];
  } catch {
    /* no local build */
  }
  return pre;
}

// prebuildify names N-API builds `<name>.napi.node` (optionally tagged); prefer those.
function score(f: string): number {
  return (f.includes('napi') ? 2 : 0) + (f.startsWith('sparq') ? 1 : 0);
}

let cached: NativeBinding | undefined;

export function loadNative(): NativeBinding {
  if (cached) return cached;
  const errors: string[] = [];
  let binding: NativeBinding | undefined;
  // SPARQ_ADDON=path: that binary and no other (sanitizer builds, debugging)
  const forced = process.env.SPARQ_ADDON;
  for (const file of forced ? [path.resolve(forced)] : candidates()) {
    try {
      binding = require(file) as NativeBinding;
      break;
    } catch (e) {
      errors.push(`  ${file}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  if (!binding && !forced) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => unknown;
      binding = bindings({ bindings: 'sparq.node', module_root: packageRoot }) as NativeBinding;
    } catch (e) {
      const msg = (e as Error).message.split('\n').filter((l) => l.trim()).slice(0, 12).join('\n    ');
      errors.push(`  local build (build/Release/sparq.node via bindings): ${msg}`);
    }
  }
  if (!binding) {
    throw new Error(
      `sparq: could not load the native addon for ${process.platform}-${process.arch} (Node ${process.version}).\n` +
        `Tried:\n${errors.join('\n') || '  (no candidates)'}\n` +
        'To fix: install a C++17 compiler and cmake (>= 3.18), then run `npm rebuild sparq` ' +
        '(or `npx cmake-js compile` in the package folder) to build from source; ' +
        'prebuilt binaries are provided for linux-x64.',
    );
  }
  const info = binding.info();
  if (info.dispatchError) throw new Error(`sparq: ${info.dispatchError}`);
  cached = binding;
  return binding;
}
