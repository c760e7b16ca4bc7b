// load_plan.ts - what the model-file loaders share: the plan of a model's weights
// (native references, per layer) and the reader that maps or reads them from a file.
import { loadNative, type NativeLinear, type NativePacked, type NativeQ4, type NativeSparse, type NativeStorage } from '../native';
import { Tensor } from '../tensor';
import type { Tokenizer } from './tokenizer';
import type { ModelArch, ModelConfig } from './model';

/** @internal */
export type WeightRef = { storage: NativeStorage; offset: number; ggml?: number } | NativePacked | NativeSparse | NativeQ4 | NativeLinear;
// q | k | v and gate | up are read back to back into one weight each (one GEMV per
// group per token); separate only where a format stores them differently.
/** @internal */
export interface LayerRefs {
  attnNorm: WeightRef; ffnNorm: WeightRef; wo: WeightRef; w2: WeightRef;
  wqkv?: WeightRef; wq?: WeightRef; wk?: WeightRef; wv?: WeightRef;
  w13?: WeightRef; w1?: WeightRef; w3?: WeightRef;
  /** f32 biases of q [heads * headDim], k and v [kvHeads * headDim] (Qwen2): all three or none */
  bq?: WeightRef; bk?: WeightRef; bv?: WeightRef;
  /** f32 RMSNorm weights [headDim] of each q and k head (Qwen3): both or none */
  qNorm?: WeightRef; kNorm?: WeightRef;
}
/** @internal The per-layer f32 vectors that are not linears and that compression carries over as they are (biases, q / k norms). */
export const LAYER_EXTRAS = ['bq', 'bk', 'bv', 'qNorm', 'kNorm'] as const;
/** @internal The extras a layer has, to spread into a rebuilt one. */
export function layerExtras(L: LayerRefs): Pick<LayerRefs, (typeof LAYER_EXTRAS)[number]> {
  const o: Pick<LayerRefs, (typeof LAYER_EXTRAS)[number]> = {};
  for (const k of LAYER_EXTRAS) if (L[k]) o[k] = L[k];
  return o;
}
/** @internal */
export interface Plan {
  config: Omit<ModelConfig, 'maxSeq' | 'headDim'> & { maxSeq: number };
  tokenizer: Tokenizer;
  stopIds: number[];
  ropeNeox: boolean;
  /** ropeFreqs: f32 [headDim / 2], RoPE frequency i divided by entry i (Llama 3.1 rope scaling) */
  weights: { embed: WeightRef; finalNorm: WeightRef; output: WeightRef; layers: LayerRefs[]; ropeFreqs?: WeightRef };
  /** features per head when heads x headDim differs from dim (a saved structurally pruned model) */
  headDim?: number;
  /** the file's weights are a pruned / quantized model's (pruneModel and quantizeModel refuse it) */
  derived?: boolean;
  /** native objects to release once the model holds what it needs */
  temp: { dispose(): void }[];
}

/**
 * Reads weights tensor by tensor. The file is memory-mapped once (private,
 * copy-on-write): tensors used as stored (f32 vectors and linears, GGUF blocks)
 * point into the mapping, with no copy and the page cache's pages shared. What
 * is converted is read in chunks, so the peak stays near the model's own size:
 * in int8 mode each f32 linear is quantized per output channel as soon as it
 * arrives and its f32 bytes freed.
 */
export class WeightReader {
  private map?: Promise<NativeStorage | null>;
  constructor(private readonly file: string, private readonly int8: boolean, readonly temp: { dispose(): void }[] = []) {}

  /** the whole file, mapped on first use (one mapping per reader); null where it cannot be mapped
   *  (a file system without mmap): everything is then read into native memory instead */
  mapped(): Promise<NativeStorage | null> {
    this.map ??= loadNative().mapFile(this.file).then((s) => this.keep(s), () => null);
    return this.map;
  }

  /** f32 values [count] at a byte offset of the file */
  async f32(offset: number, count: number): Promise<WeightRef> {
    const m = offset % 4 === 0 ? await this.mapped() : null;
    if (m) return { storage: m, offset };
    return { storage: this.keep(await loadNative().readFile(this.file, offset, count * 4)), offset: 0 };
  }

  /** an f32 linear [sum of rows, k] from parts [offset, rows] read back to back (fused q|k|v, gate|up) */
  async linear(parts: [number, number][], k: number): Promise<WeightRef> {
    // int8: quantized natively from the file in chunks of rows (never all of it in f32)
    if (this.int8) return this.keep(await loadNative().quantizeFile(this.file, parts.flat(), k));
    const ranges = parts.flatMap(([o, r]) => [o, r * k * 4]), at = contiguous(ranges);
    const m = at !== null && at % 4 === 0 ? await this.mapped() : null;
    if (m) return { storage: m, offset: at! };
    return { storage: this.keep(await loadNative().readFile(this.file, ranges)), offset: 0 };
  }

  /** F16 / BF16 / Q8_0 values (byte ranges, back to back) widened to f32 [count] */
  async widen(ranges: number[], type: number, count: number): Promise<{ storage: NativeStorage; offset: number }> {
    const at = contiguous(ranges), m = at !== null ? await this.mapped() : null;
    if (m) return { storage: this.keep(await loadNative().widenToF32(m, at!, type, count)), offset: 0 };
    const s = await loadNative().readFile(this.file, ranges);
    try {
      return { storage: this.keep(await loadNative().widenToF32(s, 0, type, count)), offset: 0 };
    } finally {
      s.dispose();
    }
  }

  /** F16 / BF16 linear [n, k] from byte ranges: widened, then quantized in int8 mode */
  async widenLinear(ranges: number[], type: number, n: number, k: number): Promise<WeightRef> {
    const wide = await this.widen(ranges, type, n * k);
    if (!this.int8) return wide;
    try {
      return this.keep(await loadNative().quantizeWeight(wide.storage, 0, n, k, 0, false, false));
    } finally {
      wide.storage.dispose();
    }
  }

  /** Q8_0 blocks of rows (parts [offset, rows], back to back) packed straight into int8 group 32, in chunks */
  async q8(parts: [number, number][], k: number): Promise<WeightRef> {
    return this.keep(await loadNative().packQ8File(this.file, parts.flat(), k));
  }

  /** GGUF blocks of rows (byte ranges, back to back) kept as they are stored: the linear runs on them */
  async blocks(ranges: number[], type: number): Promise<WeightRef> {
    const at = contiguous(ranges), m = at !== null ? await this.mapped() : null;
    if (m) return { storage: m, offset: at!, ggml: type };
    return { storage: this.keep(await loadNative().readFile(this.file, ranges)), offset: 0, ggml: type };
  }

  keep<T extends { dispose(): void }>(x: T): T {
    this.temp.push(x);
    return x;
  }
}

/** The offset where byte ranges [offset, bytes, ...] start when they lie back to back in the file, else null. */
function contiguous(ranges: number[]): number | null {
  for (let i = 2; i < ranges.length; i += 2) if (ranges[i]! !== ranges[i - 2]! + ranges[i - 1]!) return null;
  return ranges[0]!;
}
/** Whether tensors (fused parts) lie back to back in their file: used in place (mapped), only such parts are fused. */
export function backToBack(ts: { offset: number; bytes: number }[]): boolean {
  return contiguous(ts.flatMap((t) => [t.offset, t.bytes])) !== null;
}

interface LayerNames { attnNorm: string; ffnNorm: string; q: string; k: string; v: string; o: string; gate: string; up: string; down: string }

/** One layer's weights by tensor name (GGUF, HF): q|k|v and gate|up fused where `fusable` allows. */
export async function layerRefs(n: LayerNames, dim: number, qd: number, kvd: number, hidden: number, vec: (name: string) => Promise<WeightRef>,
                         lin: (names: string[], rows: number[], k: number) => Promise<WeightRef>, fusable: (names: string[]) => boolean): Promise<LayerRefs> {
  const layer: LayerRefs = {
    attnNorm: await vec(n.attnNorm), ffnNorm: await vec(n.ffnNorm), wo: await lin([n.o], [dim], qd), w2: await lin([n.down], [dim], hidden),
  };
  if (fusable([n.q, n.k, n.v])) layer.wqkv = await lin([n.q, n.k, n.v], [qd, kvd, kvd], dim);
  else [layer.wq, layer.wk, layer.wv] = [await lin([n.q], [qd], dim), await lin([n.k], [kvd], dim), await lin([n.v], [kvd], dim)];
  if (fusable([n.gate, n.up])) layer.w13 = await lin([n.gate, n.up], [hidden, hidden], dim);
  else [layer.w1, layer.w3] = [await lin([n.gate], [hidden], dim), await lin([n.up], [hidden], dim)];
  return layer;
}

/** An f32 vector of JS memory as a weight (its storage released with the plan's temp). */
export function vectorRef(a: Float32Array, temp: { dispose(): void }[]): WeightRef {
  const t = Tensor.from(a, [a.length]);
  temp.push(t);
  return { storage: t._storage, offset: t._offset };
}

/**
 * A layer's f32 extras by tensor name, where the file has them: q / k / v biases (all three)
 * and q / k head norms (both). Qwen2 requires the biases and Qwen3 the norms, as llama.cpp does.
 */
export async function layerExtrasFrom(L: LayerRefs, names: Record<(typeof LAYER_EXTRAS)[number], [string, number]>, has: (name: string) => boolean,
                               vec: (name: string, n: number) => Promise<WeightRef>, arch: ModelArch, where: string): Promise<void> {
  const groups: [(typeof LAYER_EXTRAS)[number][], ModelArch, string][] = [[['bq', 'bk', 'bv'], 'qwen2', 'q / k / v biases'], [['qNorm', 'kNorm'], 'qwen3', 'q / k norms']];
  for (const [keys, needs, what] of groups) {
    const got = keys.filter((k) => has(names[k][0]));
    if (got.length === 0 && arch !== needs) continue;
    if (got.length !== keys.length) throw new RangeError(`${where}: tensor ${names[keys.find((k) => !got.includes(k))!][0]} is missing (${arch} layers have ${what})`);
    for (const k of keys) L[k] = await vec(names[k][0], names[k][1]);
  }
}
