// sparse.ts - pruning (magnitude, Wanda, N:M) and sparse weights: the pruned
// weight is stored in the format its kernel reads fastest (csr for very
// sparse, bitmask for moderate unstructured sparsity, N:M for 2:4 / 4:8) and
// multiplied by linear() without densifying. See docs/DESIGN.md ("Sparsity").
import { CudaWeight } from './cuda';
import { checkOptions, describe, expectTensor, nonEmpty } from './errors';
import { loadNative, type NativeSparse } from './native';
import { Tensor, parseDevice } from './tensor';

export type SparseFormat = 'csr' | 'bitmask' | 'nm';

export interface PruneOptions {
  /** 'magnitude' (|W|, default) or 'wanda' (|W| x the L2 norm of each input channel's activations) */
  method?: 'magnitude' | 'wanda';
  /** fraction of weights set to zero, in [0, 1] (unstructured; N:M patterns fix it at 1 - N/M) */
  sparsity?: number;
  /** 'unstructured' (default), '2:4' or '4:8' (keep N of every M consecutive weights along k) */
  pattern?: 'unstructured' | '2:4' | '4:8';
  /** Wanda: per-input-channel activation norms [k] */
  activationNorms?: Float32Array | number[] | Tensor;
  /** unstructured: compare scores over the whole layer or within each output row
   *  (default: 'layer' for magnitude, 'row' for Wanda, as in its paper) */
  granularity?: 'layer' | 'row';
  /** storage (default: 'nm' for N:M, 'csr' at >= 80% sparsity, else 'bitmask') */
  format?: SparseFormat;
}

/**
 * A pruned [n, k] weight in a sparse format: f32 values, int8 values (one scale per
 * row) or int4 values (bitmask and N:M: one f16 scale per row and `groupSize` columns).
 */
export class SparseTensor {
  readonly shape: readonly [number, number];
  readonly format: SparseFormat;
  readonly dtype: 'f32' | 'i8' | 'i4';
  /** int4: columns per scale (32, 64 or 128); 0 otherwise */
  readonly groupSize: number;
  /** fraction of the n x k weights that are zero */
  readonly sparsity: number;
  /** the N:M pattern, if any */
  readonly pattern: string;
  /** @internal */ _native: NativeSparse | null;

  /** @internal */
  constructor(native: NativeSparse, sparsity: number, pattern: string) {
    const m = native.meta();
    this._native = native;
    this.shape = Object.freeze([m.n, m.k]) as readonly [number, number];
    this.format = m.format;
    this.dtype = m.int4 ? 'i4' : m.int8 ? 'i8' : 'f32';
    this.groupSize = m.group;
    this.sparsity = sparsity;
    this.pattern = pattern;
  }

  get disposed(): boolean {
    return this._native === null;
  }

  /** Bytes of native memory the sparse weight holds. */
  get bytes(): number {
    return this._check('bytes').meta().bytes;
  }

  /** The dense [n, k] f32 weight (int8 values dequantized). */
  async toDense(): Promise<Tensor> {
    const s = this._check('toDense');
    const out = Tensor._alloc([...this.shape], 'f32');
    try {
      await s.toDense(out._storage, out._offset);
    } catch (e) {
      out.dispose();
      throw e;
    }
    return out;
  }

  /**
   * The weight in GPU memory, for linear() with cuda activations: csr and bitmask go up
   * as CSR, N:M keeps its packed layout; int8 values keep their row scales (the GPU
   * multiplies f32 activations by the dequantized values: no activation quantization).
   */
  async to(device: 'cuda'): Promise<CudaWeight> {
    const op = `SparseTensor.to('${String(device)}')`;
    if (parseDevice(op, device) !== 'cuda') throw new TypeError(`${op}: a SparseTensor already lives on the cpu`);
    return new CudaWeight(await loadNative().cudaUploadSparse(this._check(op)));
  }

  dispose(): void {
    this._native?.dispose();
    this._native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  _check(op: string): NativeSparse {
    if (!this._native) throw new TypeError(`${op}: the sparse weight has been disposed`);
    return this._native;
  }
}

function norms(op: string, v: PruneOptions['activationNorms'], k: number): Float32Array {
  if (v === undefined) throw new TypeError(`${op}: method 'wanda' needs activationNorms (the L2 norm of each of the ${k} input channels over calibration activations)`);
  const a = v instanceof Tensor ? (expectTensor(op, 'activationNorms', v, ['f32'], 1).toArray() as Float32Array) : Float32Array.from(v);
  if (a.length !== k) throw new RangeError(`${op}: activationNorms must have ${k} entries (one per input channel); got ${a.length}`);
  if (a.some((x) => !(x >= 0) || !Number.isFinite(x))) throw new RangeError(`${op}: activationNorms must be finite and >= 0`);
  return a;
}

/** The k-th smallest value of a (0-based; a is reordered): quickselect, O(n) on average. */
function kthSmallest(a: Float32Array, k: number): number {
  let lo = 0, hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo, j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k]!;
  }
  return a[k]!;
}

/** Zeroes `count` of the entries [lo, hi) of w with the lowest scores (ties: the lower index first). */
function zeroLowest(w: Float32Array, score: Float32Array, lo: number, hi: number, count: number): void {
  if (count <= 0) return;
  if (count >= hi - lo) {
    w.fill(0, lo, hi);
    return;
  }
  const t = kthSmallest(score.slice(lo, hi), count - 1);
  let below = 0;
  for (let i = lo; i < hi; i++) if (score[i]! < t) below++;
  let ties = count - below;
  for (let i = lo; i < hi; i++) {
    if (score[i]! < t) w[i] = 0;
    else if (score[i] === t && ties > 0) {
      w[i] = 0;
      ties--;
    }
  }
}

/** The pruned dense values (f32 [n * k]) of w. */
export function pruneValues(w: Tensor, opts: PruneOptions = {}): { values: Float32Array; n: number; k: number; N: number; M: number } {
  checkOptions('prune', opts);
  const op = 'prune';
  const W = expectTensor(op, 'w', w, ['f32'], 2);
  nonEmpty(op, 'w', W);
  const [n, k] = W.shape as [number, number];
  const method = opts.method ?? 'magnitude';
  if (method !== 'magnitude' && method !== 'wanda') throw new TypeError(`${op}: method must be 'magnitude' or 'wanda'; got ${describe(method)}`);
  const pattern = opts.pattern ?? 'unstructured';
  if (pattern !== 'unstructured' && pattern !== '2:4' && pattern !== '4:8') throw new TypeError(`${op}: pattern must be 'unstructured', '2:4' or '4:8'; got ${describe(pattern)}`);
  const values = W.toArray() as Float32Array;
  const score = new Float32Array(values.length);
  const act = method === 'wanda' ? norms(op, opts.activationNorms, k) : null;
  for (let j = 0; j < n; j++) for (let c = 0; c < k; c++) score[j * k + c] = Math.abs(values[j * k + c]!) * (act ? act[c]! : 1);
  if (pattern !== 'unstructured') {
    if (opts.sparsity !== undefined) throw new RangeError(`${op}: pattern ${pattern} fixes the sparsity; leave sparsity out`);
    const [N, M] = pattern.split(':').map(Number) as [number, number];
    for (let j = 0; j < n; j++)
      for (let g = 0; g < k; g += M) {
        const hi = Math.min(k, g + M);
        zeroLowest(values, score, j * k + g, j * k + hi, hi - g - N);
      }
    return { values, n, k, N, M };
  }
  const sparsity = opts.sparsity ?? 0.5;
  if (typeof sparsity !== 'number' || !(sparsity >= 0 && sparsity <= 1)) throw new RangeError(`${op}: sparsity must be in [0, 1]; got ${describe(sparsity)}`);
  const gran = opts.granularity ?? (method === 'wanda' ? 'row' : 'layer');
  if (gran !== 'layer' && gran !== 'row') throw new TypeError(`${op}: granularity must be 'layer' or 'row'; got ${describe(gran)}`);
  if (gran === 'layer') zeroLowest(values, score, 0, n * k, Math.round(sparsity * n * k));
  else for (let j = 0; j < n; j++) zeroLowest(values, score, j * k, (j + 1) * k, Math.round(sparsity * k));
  return { values, n, k, N: 0, M: 0 };
}

/**
 * Prunes w [n, k] (nn.Linear layout) and stores it sparse. Unstructured: exactly
 * round(sparsity * count) weights of the layer (or of each row) become zero, the
 * lowest-scoring first; N:M: the N highest scores of every M along k stay.
 */
export function prune(w: Tensor, opts: PruneOptions = {}): SparseTensor {
  const { values, n, k, N, M } = pruneValues(w, opts);
  let zeros = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === 0) zeros++;
  const sparsity = zeros / values.length;
  const format = opts.format ?? (N ? 'nm' : sparsity >= 0.8 ? 'csr' : 'bitmask');
  const formats = loadNative().sparseFormats;
  if (typeof format !== 'string' || !formats.includes(format)) {
    throw new TypeError(`prune: format must be ${formats.map((f) => `'${f}'`).join(', ')}; got ${describe(format)}`);
  }
  if (format === 'nm' && !N) throw new RangeError("prune: format 'nm' needs pattern '2:4' or '4:8'");
  const t = Tensor.from(values, [n, k]);
  try {
    return new SparseTensor(loadNative().sparseFromDense(t._storage, t._offset, n, k, format, N, M, false, true), sparsity, N ? `${N}:${M}` : 'unstructured');
  } finally {
    t.dispose();
  }
}

export interface QuantizeSparseOptions {
  /** 8 (default): int8 values, one symmetric scale per output row. 4: int4 values in [-7, 7]
   *  with one f16 scale per row and `groupSize` columns (bitmask and N:M formats). */
  bits?: 8 | 4;
  /** int4: columns per scale, 32, 64 (default: 32 values per scale at 50% sparsity) or 128 */
  groupSize?: number;
}

/** The same sparse weight with quantized values: int8 (one symmetric scale per output row) or int4. */
export function quantizeSparse(sw: SparseTensor, opts: QuantizeSparseOptions = {}): SparseTensor {
  const op = 'quantize';
  checkOptions(op, opts);
  const s = sw._check(op);
  if (sw.dtype !== 'f32') throw new TypeError(`${op}: the sparse weight is already quantized (${sw.dtype})`);
  const bits = opts.bits ?? 8;
  if (bits !== 8 && bits !== 4) throw new RangeError(`${op}: bits must be 8 or 4; got ${describe(opts.bits)}`);
  const group = opts.groupSize ?? 64;
  if (bits === 8 && opts.groupSize !== undefined) throw new TypeError(`${op}: groupSize applies to 4-bit sparse values (int8 ones have one scale per row)`);
  if (![32, 64, 128].includes(group)) throw new RangeError(`${op}: groupSize must be 32, 64 or 128; got ${describe(opts.groupSize)}`);
  if (bits === 4 && sw.format === 'csr') throw new TypeError(`${op}: 4-bit sparse values need the bitmask or nm format (csr spends 2-4 bytes on each value's column)`);
  return new SparseTensor(loadNative().sparseQuantize(s, bits, group), sw.sparsity, sw.pattern);
}

export interface PruneRowsOptions {
  /** 'magnitude' (row L2 norm, default) or 'wanda' (sum over the row of |W| x the input channel's activation norm) */
  method?: 'magnitude' | 'wanda';
  /** fraction of the output rows removed, in [0, 1) */
  sparsity?: number;
  activationNorms?: Float32Array | number[] | Tensor;
}

/**
 * Structured pruning: removes whole output rows of w [n, k] (the lowest-scoring
 * round(sparsity * n); ties: the higher index goes) and returns the smaller dense
 * weight [n', k] with the indices of the rows it kept, in order - the next layer
 * keeps the same input columns (see pruneModel's `structured` for FFN channels and heads).
 */
export function pruneRows(w: Tensor, opts: PruneRowsOptions = {}): { weight: Tensor; kept: Int32Array } {
  const op = 'pruneRows';
  checkOptions(op, opts);
  const W = expectTensor(op, 'w', w, ['f32'], 2);
  nonEmpty(op, 'w', W);
  const [n, k] = W.shape as [number, number];
  const method = opts.method ?? 'magnitude';
  if (method !== 'magnitude' && method !== 'wanda') throw new TypeError(`${op}: method must be 'magnitude' or 'wanda'; got ${describe(method)}`);
  const sparsity = opts.sparsity ?? 0.5;
  if (typeof sparsity !== 'number' || !(sparsity >= 0 && sparsity < 1)) throw new RangeError(`${op}: sparsity must be in [0, 1); got ${describe(sparsity)}`);
  const act = method === 'wanda' ? norms(op, opts.activationNorms, k) : null;
  const v = W.toArray() as Float32Array;
  const score = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += act ? Math.abs(v[j * k + c]!) * act[c]! : v[j * k + c]! ** 2;
    score[j] = act ? s : Math.sqrt(s);
  }
  const keep = n - Math.round(sparsity * n);
  if (keep < 1) throw new RangeError(`${op}: sparsity ${sparsity} of ${n} rows removes every row; at least one must stay`);
  const kept = Int32Array.from(Array.from(score.keys()).sort((a, b) => score[b]! - score[a]! || a - b).slice(0, keep).sort((a, b) => a - b));
  const out = new Float32Array(keep * k);
  kept.forEach((r, i) => out.set(v.subarray(r * k, (r + 1) * k), i * k));
  return { weight: Tensor.from(out, [keep, k]), kept };
}
