// quantize.ts - int8 weight quantizers (symmetric / asymmetric, per output
// channel or per group along K), calibration observers for static activation
// scales, and error metrics. Weights are prepacked once, here, into the layout
// the int8 GEMM kernels read; values/scales are unpacked on demand.
import { CudaWeight } from './cuda';
import { expectTensor, inputScaleOf } from './errors';
import { SparseTensor, quantizeSparse, type QuantizeSparseOptions } from './sparse';
import { loadNative, type NativePacked, type PackedMeta } from './native';
import { Tensor, parseDevice } from './tensor';

export type Granularity = 'per-channel' | 'per-group';

export interface QuantizeOptions {
  /** 'per-channel' (default): one scale per output row; 'per-group': one per `groupSize` inputs. */
  granularity?: Granularity;
  /** 32, 64 or 128 (default 32) for 'per-group'. */
  groupSize?: number;
  /** true (default): symmetric, values in [-127, 127]. false: asymmetric with a zero point. */
  symmetric?: boolean;
}

export interface QuantizationError {
  /** signal-to-quantization-noise ratio in dB: 10 log10(sum x^2 / sum (x - x~)^2) */
  sqnr: number;
  maxAbsError: number;
  mse: number;
  /** ||x - x~|| / ||x|| */
  relativeError: number;
}

const GROUP_SIZES = [32, 64, 128];

function resolveOptions(op: string, opts: QuantizeOptions): { group: number; symmetric: boolean } {
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${op}: options must be an object`);
  const g = opts.granularity ?? 'per-channel';
  if (g !== 'per-channel' && g !== 'per-group') {
    throw new TypeError(`${op}: granularity must be 'per-channel' or 'per-group'; got ${String(g)}`);
  }
  const symmetric = opts.symmetric ?? true;
  if (typeof symmetric !== 'boolean') throw new TypeError(`${op}: symmetric must be a boolean`);
  if (g === 'per-channel') {
    if (opts.groupSize !== undefined) throw new TypeError(`${op}: groupSize is only valid with granularity 'per-group'`);
    return { group: 0, symmetric };
  }
  const gs = opts.groupSize ?? 32;
  if (!GROUP_SIZES.includes(gs)) throw new RangeError(`${op}: groupSize must be 32, 64 or 128; got ${String(gs)}`);
  return { group: gs, symmetric };
}

/** An int8-quantized weight [n, k]: W ~= scale[n, g] * (q[n, k] - zero[n, g]). */
export class QuantizedTensor {
  readonly shape: readonly [number, number];
  readonly dtype = 'i8' as const;
  readonly granularity: Granularity;
  /** group size along K (per-group), or K (per-channel) */
  readonly groupSize: number;
  readonly symmetric: boolean;
  /** @internal */ readonly _packed: NativePacked;
  private readonly meta: PackedMeta;
  private cache: { values?: Tensor; scales?: Tensor; zeroPoints?: Tensor } = {};
  private released = false;

  /** @internal */
  constructor(packed: NativePacked) {
    this._packed = packed;
    this.meta = packed.meta();
    this.shape = Object.freeze([this.meta.n, this.meta.k]) as readonly [number, number];
    this.granularity = this.meta.group > 0 ? 'per-group' : 'per-channel';
    this.groupSize = this.meta.group > 0 ? this.meta.group : this.meta.k;
    this.symmetric = !this.meta.asymmetric;
  }

  get disposed(): boolean {
    return this.released;
  }
  /** number of scale groups per row (1 for per-channel) */
  get groups(): number {
    return this.meta.groups;
  }
  /** bytes of the packed weight (values, scales, sums) */
  get byteLength(): number {
    return this.meta.bytes;
  }

  /** @internal */
  _check(op: string): void {
    if (this.released) throw new TypeError(`${op}: quantized weight has been disposed`);
  }

  private unpack(): void {
    this._check('QuantizedTensor');
    if (this.cache.values) return;
    const u = this._packed.unpack();
    const [n] = this.shape;
    const g = this.meta.groups;
    this.cache.values = Tensor.from(new Int8Array(u.values), this.shape);
    this.cache.scales = Tensor.from(new Float32Array(u.scales), g === 1 ? [n] : [n, g]);
    if (!this.symmetric) this.cache.zeroPoints = Tensor.from(new Int32Array(u.zeros), g === 1 ? [n] : [n, g]);
  }

  /** int8 values [n, k] (a tensor owned by this object) */
  get values(): Tensor {
    this.unpack();
    return this.cache.values!;
  }
  /** f32 scales: [n] per-channel, [n, groups] per-group */
  get scales(): Tensor {
    this.unpack();
    return this.cache.scales!;
  }
  /** i32 zero points (asymmetric only), same shape as scales; null when symmetric */
  get zeroPoints(): Tensor | null {
    this.unpack();
    return this.cache.zeroPoints ?? null;
  }

  /** The f32 weight this quantization represents. */
  dequantize(): Tensor {
    this._check('QuantizedTensor.dequantize');
    const out = Tensor._alloc(this.shape, 'f32');
    loadNative().dequantize(this._packed, out._storage, out._offset, true);
    return out;
  }

  /** Error metrics of this quantization against the original f32 weight. */
  error(original: Tensor): QuantizationError {
    const w = expectTensor('QuantizedTensor.error', 'original', original, ['f32'], 2);
    if (w.shape[0] !== this.shape[0] || w.shape[1] !== this.shape[1]) {
      throw new RangeError(`QuantizedTensor.error: original must have shape [${this.shape.join(', ')}]; got [${w.shape.join(', ')}]`);
    }
    const dq = this.dequantize();
    try {
      return quantizationError(w, dq);
    } finally {
      dq.dispose();
    }
  }

  /**
   * The weight in GPU memory, for linear() with cuda activations: int8 values with their
   * scales (per channel, or groups of 32 / 64 / 128), same quantization contract.
   * Symmetric weights only. `inputScale` fixes a static activation scale (default: dynamic
   * per row). Rejects when no CUDA device is available.
   */
  async to(device: 'cuda', opts: { inputScale?: number } = {}): Promise<CudaWeight> {
    const op = `QuantizedTensor.to('${String(device)}')`;
    if (parseDevice(op, device) !== 'cuda') throw new TypeError(`${op}: a QuantizedTensor already lives on the cpu`);
    this._check(op);
    if (!this.symmetric) throw new TypeError(`${op}: asymmetric weights run on the CPU only; quantize with symmetric: true`);
    return new CudaWeight(await loadNative().cudaUploadPacked(this._packed, inputScaleOf(op, opts.inputScale)));
  }

  dispose(): void {
    if (this.released) return;
    this.released = true;
    this._packed.dispose();
    this.cache.values?.dispose();
    this.cache.scales?.dispose();
    this.cache.zeroPoints?.dispose();
    this.cache = {};
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  toString(): string {
    return `QuantizedTensor(i8, [${this.shape.join(', ')}], ${this.granularity}${this.granularity === 'per-group' ? ` ${this.groupSize}` : ''}, ${this.symmetric ? 'symmetric' : 'asymmetric'})`;
  }
}

/** Quantizes an f32 weight [n, k] (nn.Linear layout) to int8 and prepacks it. Runs on the
 *  calling thread (one-time preparation); use quantizeAsync for large weights in servers. */
export function quantize(w: Tensor, opts?: QuantizeOptions): QuantizedTensor;
/** A pruned weight keeps its sparsity and gets int8 values (one scale per output row), or
 *  int4 values with `{ bits: 4, groupSize }` (one f16 scale per row and group of columns). */
export function quantize(w: SparseTensor, opts?: QuantizeSparseOptions): SparseTensor;
export function quantize(w: Tensor | SparseTensor, opts: QuantizeOptions | QuantizeSparseOptions = {}): QuantizedTensor | SparseTensor {
  if (w instanceof SparseTensor) return quantizeSparse(w, opts as QuantizeSparseOptions);
  const t = expectTensor('quantize', 'w', w, ['f32'], 2);
  const { group, symmetric } = resolveOptions('quantize', opts as QuantizeOptions);
  const [n, k] = t.shape as [number, number];
  if (n === 0 || k === 0) throw new RangeError(`quantize: w must be non-empty; got shape [${n}, ${k}]`);
  return new QuantizedTensor(loadNative().quantizeWeight(t._storage, t._offset, n, k, group, !symmetric, true));
}

/** quantize(), off the JS thread. */
export async function quantizeAsync(w: Tensor, opts: QuantizeOptions = {}): Promise<QuantizedTensor> {
  const t = expectTensor('quantizeAsync', 'w', w, ['f32'], 2);
  const { group, symmetric } = resolveOptions('quantizeAsync', opts);
  const [n, k] = t.shape as [number, number];
  if (n === 0 || k === 0) throw new RangeError(`quantizeAsync: w must be non-empty; got shape [${n}, ${k}]`);
  return new QuantizedTensor(await loadNative().quantizeWeight(t._storage, t._offset, n, k, group, !symmetric, false));
}

/** Error metrics of an approximation against a reference (same shape, f32). */
export function quantizationError(reference: Tensor, approx: Tensor): QuantizationError {
  const a = expectTensor('quantizationError', 'reference', reference, ['f32']);
  const b = expectTensor('quantizationError', 'approx', approx, ['f32']);
  if (a.numel !== b.numel) throw new RangeError(`quantizationError: sizes differ (${a.numel} vs ${b.numel})`);
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  let sig = 0, noise = 0, maxAbs = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i]! - y[i]!;
    sig += x[i]! * x[i]!;
    noise += d * d;
    if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
  }
  return {
    sqnr: noise === 0 ? Infinity : 10 * Math.log10(sig / noise),
    maxAbsError: maxAbs,
    mse: x.length ? noise / x.length : 0,
    relativeError: sig === 0 ? (noise === 0 ? 0 : Infinity) : Math.sqrt(noise / sig),
  };
}

// --- static activation calibration -----------------------------------------------------
export type ObserverMethod = 'minmax' | 'percentile' | 'mse';

export interface ObserverOptions {
  method?: ObserverMethod;
  /** for 'percentile': the share of |x| (symmetric) or of each tail (asymmetric) kept, in % (default 99.99) */
  percentile?: number;
  /** symmetric int8 [-127, 127] with zero point 0 (default), or asymmetric [-128, 127] */
  symmetric?: boolean;
  /** histogram resolution (default 2048) */
  bins?: number;
}

export interface QuantParams {
  scale: number;
  zeroPoint: number;
  /** the clipping range the scale covers */
  min: number;
  max: number;
}

/** Collects activation statistics over calibration batches and turns them into a static
 *  per-tensor int8 scale (PyTorch-observer style: min-max, percentile, MSE-optimal). */
export class Observer {
  readonly method: ObserverMethod;
  readonly percentile: number;
  readonly symmetric: boolean;
  readonly bins: number;
  private lo = Infinity;
  private hi = -Infinity;
  private hist: Float64Array;
  private count = 0;

  constructor(opts: ObserverOptions = {}) {
    this.method = opts.method ?? 'minmax';
    if (!['minmax', 'percentile', 'mse'].includes(this.method)) {
      throw new TypeError(`Observer: method must be 'minmax', 'percentile' or 'mse'; got ${String(this.method)}`);
    }
    this.percentile = opts.percentile ?? 99.99;
    if (!(this.percentile > 0 && this.percentile <= 100)) throw new RangeError('Observer: percentile must be in (0, 100]');
    this.symmetric = opts.symmetric ?? true;
    this.bins = opts.bins ?? 2048;
    if (!Number.isInteger(this.bins) || this.bins < 16 || this.bins > 1 << 20) throw new RangeError('Observer: bins must be an integer in [16, 2^20]');
    this.hist = new Float64Array(this.bins);
  }

  /** @internal An observer holding statistics gathered elsewhere (a histogram of `bins`
   *  counts over [min(lo, 0), max(hi, 0)], as observe() builds it). */
  static _from(opts: ObserverOptions, lo: number, hi: number, hist: Float64Array | null, count: number): Observer {
    const o = new Observer(opts);
    o.lo = Math.min(lo, 0);
    o.hi = Math.max(hi, 0);
    if (hist) {
      if (hist.length !== o.bins) throw new RangeError(`Observer: the histogram must have ${o.bins} bins`);
      o.hist = Float64Array.from(hist);
    }
    o.count = count;
    return o;
  }

  /** Adds a batch of activations (any shape, f32). Off the JS thread. */
  async observe(x: Tensor): Promise<void> {
    const t = expectTensor('Observer.observe', 'x', x, ['f32']);
    if (t.numel === 0) return;
    const nat = loadNative();
    const mm = await nat.stats(t._storage, t._offset, t.numel, 0, 0, 0);
    if (!Number.isFinite(mm.min) || !Number.isFinite(mm.max)) throw new RangeError('Observer.observe: x holds non-finite values');
    const lo = Math.min(this.lo, mm.min, 0), hi = Math.max(this.hi, mm.max, 0);
    if (this.count > 0 && (lo < this.lo || hi > this.hi)) this.rebin(lo, hi);
    this.lo = lo;
    this.hi = hi;
    if (this.method !== 'minmax') {
      const h = await nat.stats(t._storage, t._offset, t.numel, this.bins, lo, hi);
      const add = h.histogram!;
      for (let i = 0; i < this.bins; i++) this.hist[i]! += add[i]!;
    }
    this.count += t.numel;
  }

  // Spreads the old histogram over the new, wider range (proportional overlap).
  private rebin(lo: number, hi: number): void {
    if (this.method === 'minmax') return;
    const old = this.hist, n = this.bins;
    const ow = (this.hi - this.lo) / n, nw = (hi - lo) / n;
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (!old[i]) continue;
      const a = this.lo + i * ow, b = a + ow;
      let j = Math.max(0, Math.floor((a - lo) / nw));
      for (; j < n; j++) {
        const c = lo + j * nw, d = c + nw;
        if (c >= b) break;
        const overlap = ow > 0 ? (Math.min(b, d) - Math.max(a, c)) / ow : 1;
        if (overlap > 0) out[j]! += old[i]! * overlap;
      }
    }
    this.hist = out;
  }

  /** The static quantization parameters for everything observed so far. */
  compute(): QuantParams {
    if (this.count === 0) throw new Error('Observer.compute: observe() at least one batch first');
    let lo = this.lo, hi = this.hi;
    if (this.method === 'percentile') [lo, hi] = this.percentileRange();
    else if (this.method === 'mse') [lo, hi] = this.mseRange();
    return paramsFor(lo, hi, this.symmetric);
  }

  private centers(): Float64Array {
    const w = (this.hi - this.lo) / this.bins;
    const c = new Float64Array(this.bins);
    for (let i = 0; i < this.bins; i++) c[i] = this.lo + (i + 0.5) * w;
    return c;
  }

  private percentileRange(): [number, number] {
    const c = this.centers(), h = this.hist, n = this.bins;
    const total = h.reduce((a, b) => a + b, 0);
    const keep = this.percentile / 100;
    if (this.symmetric) {
      // smallest t with share(|x| <= t) >= keep, from bins sorted by |center|
      const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => Math.abs(c[a]!) - Math.abs(c[b]!));
      let acc = 0;
      const w = (this.hi - this.lo) / n;
      for (const i of order) {
        acc += h[i]!;
        if (acc >= keep * total) {
          const t = Math.min(Math.abs(c[i]!) + w / 2, Math.max(-this.lo, this.hi));
          return [-t, t];
        }
      }
      return [this.lo, this.hi];
    }
    const tail = (1 - keep) * total;
    let acc = 0, lo = this.lo, hi = this.hi;
    const w = (this.hi - this.lo) / n;
    for (let i = 0; i < n; i++) { acc += h[i]!; if (acc > tail) { lo = this.lo + i * w; break; } }
    acc = 0;
    for (let i = n - 1; i >= 0; i--) { acc += h[i]!; if (acc > tail) { hi = this.lo + (i + 1) * w; break; } }
    return [Math.min(lo, 0), Math.max(hi, 0)];
  }

  // Expected squared error per value for a clipping range: rounding noise
  // step^2/12 inside, squared distance to the edge outside.
  private mseRange(): [number, number] {
    const c = this.centers(), h = this.hist;
    const cost = (lo: number, hi: number): number => {
      const p = paramsFor(lo, hi, this.symmetric);
      const rmin = p.min, rmax = p.max;
      const inside = (p.scale * p.scale) / 12;
      let e = 0;
      for (let i = 0; i < c.length; i++) {
        const hv = h[i]!;
        if (!hv) continue;
        const v = c[i]!;
        e += hv * (v < rmin ? (v - rmin) ** 2 : v > rmax ? (v - rmax) ** 2 : inside);
      }
      return e;
    };
    let best: [number, number] = [this.lo, this.hi];
    let bestCost = cost(this.lo, this.hi);
    for (let s = 1; s <= 200; s++) {
      const f = s / 200;
      const cand: [number, number] = [this.lo * f, this.hi * f];
      const e = cost(cand[0], cand[1]);
      if (e < bestCost) { bestCost = e; best = cand; }
    }
    return best;
  }
}

/** Scale and zero point covering [lo, hi] (symmetric: [-max|.|, max|.|] onto [-127, 127];
 *  asymmetric: [lo, hi] onto [-128, 127]). */
export function paramsFor(lo: number, hi: number, symmetric: boolean): QuantParams {
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  if (symmetric) {
    const a = Math.max(-lo, hi);
    const scale = a > 0 ? a / 127 : 1;
    return { scale, zeroPoint: 0, min: -127 * scale, max: 127 * scale };
  }
  const scale = hi > lo ? (hi - lo) / 255 : 1;
  const zeroPoint = Math.min(127, Math.max(-128, Math.round(-128 - lo / scale)));
  return { scale, zeroPoint, min: (-128 - zeroPoint) * scale, max: (127 - zeroPoint) * scale };
}
