// attention.ts - fused attention (prefill and decode) and the KV cache.
// Shapes follow PyTorch's scaled_dot_product_attention: q [b, hq, tq, d],
// k / v [b, hkv, tk, d]. The native kernel never materialises the score
// matrix; see docs/DESIGN.md ("Attention").
import { checkOptions, describe, expectTensor, nonEmpty, sameDevice, withOutput } from './errors';
import { loadNative } from './native';
import { Tensor, parseDevice, type Device } from './tensor';

export type KVDType = 'f32' | 'f16' | 'i8';
const KV_CODE: Record<KVDType, number> = { f32: 0, f16: 1, i8: 2 };

export interface AttentionOptions {
  /** query i sees keys j <= i + (tk - tq): aligned bottom-right, so a chunk of new
   *  queries attends to the cached keys and to itself (default false) */
  causal?: boolean;
  /** multiplies q . k (default 1 / sqrt(d)) */
  scale?: number;
  /** additive f32 mask of shape [tq, tk] or [b | 1, hq | 1, tq, tk] (-Infinity hides a key) */
  mask?: Tensor;
}

export interface KVCacheOptions {
  layers: number;
  kvHeads: number;
  headDim: number;
  maxSeq: number;
  /** default 1 */
  batch?: number;
  /** storage: 'f32', 'f16', or 'i8' (symmetric, one f32 scale per token and head). Default 'f32'. */
  dtype?: KVDType;
  /** 'cuda': keep the cache in GPU memory (append and attend with cuda tensors). Default 'cpu'. */
  device?: Device;
}

/** The keys and values of one layer of a KVCache, as they are when view() is called. */
export class KVView {
  /** @internal */
  constructor(readonly cache: KVCache, readonly layer: number, readonly length: number) {}
}

function positiveInt(op: string, name: string, v: unknown, max = 2 ** 30): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new RangeError(`${op}: ${name} must be an integer in [1, ${max}]; got ${describe(v)}`);
  }
  return v;
}

/**
 * Keys and values of every layer, [batch, kvHeads, maxSeq, headDim] per layer,
 * in f32, f16 or int8 (quantized on append; the attention kernel reads int8
 * directly, no dequantized copy). Appends to one layer run in call order.
 */
export class KVCache {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly maxSeq: number;
  readonly batch: number;
  readonly dtype: KVDType;
  readonly device: Device;
  /** @internal */ readonly _k: Tensor[] = [];
  /** @internal */ readonly _v: Tensor[] = [];
  /** @internal */ readonly _ks: Tensor[] = [];
  /** @internal */ readonly _vs: Tensor[] = [];
  private readonly lengths: number[];
  private readonly reserved: number[];
  private readonly tails: Promise<void>[];
  private released = false;

  constructor(opts: KVCacheOptions) {
    const op = 'KVCache';
    if (typeof opts !== 'object' || opts === null) throw new TypeError(`${op}: options object required; got ${describe(opts)}`);
    this.layers = positiveInt(op, 'layers', opts.layers, 4096);
    this.kvHeads = positiveInt(op, 'kvHeads', opts.kvHeads, 4096);
    this.headDim = positiveInt(op, 'headDim', opts.headDim, 65536);
    this.maxSeq = positiveInt(op, 'maxSeq', opts.maxSeq, 2 ** 24);
    this.batch = positiveInt(op, 'batch', opts.batch ?? 1, 4096);
    const dtype = opts.dtype ?? 'f32';
    if (!(dtype in KV_CODE)) throw new TypeError(`${op}: dtype must be 'f32', 'f16' or 'i8'; got ${describe(dtype)}`);
    this.dtype = dtype;
    this.device = parseDevice(op, opts.device ?? 'cpu');
    const perLayer = this.batch * this.kvHeads * this.maxSeq;
    const bytes = this.layers * 2 * perLayer * (this.headDim * (dtype === 'f32' ? 4 : dtype === 'f16' ? 2 : 1) + (dtype === 'i8' ? 4 : 0));
    if (!Number.isSafeInteger(bytes) || bytes > 2 ** 46) throw new RangeError(`${op}: ${bytes} bytes is too large`);
    try {
      for (let l = 0; l < this.layers; l++) {
        const shape = [this.batch, this.kvHeads, this.maxSeq, this.headDim];
        this._k.push(Tensor.zeros(shape, dtype, this.device));
        this._v.push(Tensor.zeros(shape, dtype, this.device));
        if (dtype === 'i8') {
          this._ks.push(Tensor.zeros([this.batch, this.kvHeads, this.maxSeq], 'f32', this.device));
          this._vs.push(Tensor.zeros([this.batch, this.kvHeads, this.maxSeq], 'f32', this.device));
        }
      }
    } catch (e) {
      this.dispose();
      throw new (e instanceof RangeError ? RangeError : Error)(`${op}: cannot allocate ${bytes} bytes: ${(e as Error).message}`);
    }
    this.lengths = new Array<number>(this.layers).fill(0);
    this.reserved = new Array<number>(this.layers).fill(0);
    this.tails = new Array<Promise<void>>(this.layers).fill(Promise.resolve());
  }

  /** Bytes of native memory held by the cache. */
  get bytes(): number {
    return [...this._k, ...this._v, ...this._ks, ...this._vs].reduce((s, t) => s + t.byteLength, 0);
  }

  get disposed(): boolean {
    return this.released;
  }

  /** Positions stored in a layer (appends that have finished). */
  length(layer = 0): number {
    this.checkLayer('KVCache.length', layer);
    return this.lengths[layer]!;
  }

  /**
   * Stores new positions of one layer: k and v are f32 [batch, kvHeads, t, headDim]
   * (f16 / int8 conversion happens here). Throws a RangeError, before touching
   * the cache, when the layer would exceed maxSeq.
   */
  append(layer: number, k: Tensor, v: Tensor): Promise<void> {
    const op = 'KVCache.append';
    try {
      this.checkLayer(op, layer);
      const shape = [this.batch, this.kvHeads, -1, this.headDim];
      const K = expectTensor(op, 'k', k, ['f32'], 4), V = expectTensor(op, 'v', v, ['f32'], 4);
      for (const [name, t] of [['k', K], ['v', V]] as const) {
        if (t.shape.some((d, i) => shape[i] !== -1 && d !== shape[i]) || t.shape[2] !== K.shape[2]) {
          throw new RangeError(`${op}: '${name}' must have shape [${this.batch}, ${this.kvHeads}, t, ${this.headDim}] ` +
            `(the same t for k and v); got [${t.shape.join(', ')}]`);
        }
      }
      nonEmpty(op, 'k', K);
      if (sameDevice(op, { k: K, v: V }) !== this.device) {
        throw new TypeError(`${op}: the cache is on ${this.device} but k and v are on ${K.device} (move them with .to('${this.device}'))`);
      }
      const t = K.shape[2]!;
      const pos = this.reserved[layer]!;
      if (pos + t > this.maxSeq) {
        throw new RangeError(`${op}: layer ${layer} holds ${pos} positions; ${t} more exceed maxSeq ${this.maxSeq}`);
      }
      this.reserved[layer] = pos + t;
      const run = async (): Promise<void> => {
        if (this.released) throw new Error(`${op}: the cache has been disposed`);
        const nat = loadNative(), code = KV_CODE[this.dtype];
        const pairs: [Tensor, Tensor, Tensor | undefined][] = [[K, this._k[layer]!, this._ks[layer]], [V, this._v[layer]!, this._vs[layer]]];
        await Promise.all(pairs.map(([src, dst, sc]) => nat.kvStore({
          src: src._storage, srcOff: src._offset, b: this.batch, h: this.kvHeads, t, d: this.headDim, type: code,
          dst: dst._storage, dstOff: dst._offset, scales: sc?._storage ?? null, scalesOff: sc?._offset ?? 0, cap: this.maxSeq, pos,
        })));
        this.lengths[layer] = pos + t;
      };
      const p = this.tails[layer]!.then(run, run);
      this.tails[layer] = p.catch(() => {
        this.reserved[layer] = Math.min(this.reserved[layer]!, this.lengths[layer]!);
      });
      return p;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The layer's keys and values for attention(q, cache.view(layer), null, ...). */
  view(layer: number): KVView {
    this.checkLayer('KVCache.view', layer);
    return new KVView(this, layer, this.lengths[layer]!);
  }

  /** Forgets positions >= length in every layer (or one layer), e.g. to rewind a conversation. */
  truncate(length: number, layer?: number): void {
    const op = 'KVCache.truncate';
    if (!Number.isInteger(length) || length < 0) throw new RangeError(`${op}: length must be a non-negative integer; got ${describe(length)}`);
    const layers = layer === undefined ? [...this.lengths.keys()] : [layer];
    for (const l of layers) {
      this.checkLayer(op, l);
      if (this.reserved[l] !== this.lengths[l]) throw new Error(`${op}: layer ${l} has an append in progress`);
      this.lengths[l] = this.reserved[l] = Math.min(this.lengths[l]!, length);
    }
  }

  /** Empties every layer (memory stays allocated). */
  reset(): void {
    this.truncate(0);
  }

  dispose(): void {
    this.released = true;
    for (const t of [...this._k, ...this._v, ...this._ks, ...this._vs]) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private checkLayer(op: string, layer: unknown): asserts layer is number {
    if (this.released) throw new TypeError(`${op}: the cache has been disposed`);
    if (typeof layer !== 'number' || !Number.isInteger(layer) || layer < 0 || layer >= this.layers) {
      throw new RangeError(`${op}: layer must be an integer in [0, ${this.layers - 1}]; got ${describe(layer)}`);
    }
  }
}

interface KvArgs {
  b: number; hkv: number; tk: number; d: number; cap: number; code: number;
  k: Tensor; v: Tensor; ks: Tensor | null; vs: Tensor | null;
}

const KV_TENSOR_CODE: Record<string, number> = { f32: 0, f16: 1, bf16: 3 };

function kvFromTensors(op: string, k: unknown, v: unknown): KvArgs {
  const K = expectTensor(op, 'k', k, ['f32', 'f16', 'bf16'], 4);
  const V = expectTensor(op, 'v', v, ['f32', 'f16', 'bf16'], 4);
  if (K.dtype === 'bf16' && K.device === 'cpu') throw new TypeError(`${op}: bf16 keys and values run on cuda only; got them on the cpu`);
  if (K.dtype !== V.dtype) throw new TypeError(`${op}: k and v must have the same dtype; got ${K.dtype} and ${V.dtype}`);
  if (K.shape.some((d, i) => d !== V.shape[i])) {
    throw new RangeError(`${op}: k and v must have the same shape; got [${K.shape.join(', ')}] and [${V.shape.join(', ')}]`);
  }
  nonEmpty(op, 'k', K);
  const [b, hkv, tk, d] = K.shape as [number, number, number, number];
  return { b, hkv, tk, d, cap: tk, code: KV_TENSOR_CODE[K.dtype]!, k: K, v: V, ks: null, vs: null };
}

function kvFromView(op: string, view: KVView): KvArgs {
  const c = view.cache;
  if (c.disposed) throw new TypeError(`${op}: the cache has been disposed`);
  if (view.length === 0) throw new RangeError(`${op}: layer ${view.layer} of the cache is empty (append keys first)`);
  const l = view.layer;
  return {
    b: c.batch, hkv: c.kvHeads, tk: view.length, d: c.headDim, cap: c.maxSeq, code: KV_CODE[c.dtype],
    k: c._k[l]!, v: c._v[l]!, ks: c._ks[l] ?? null, vs: c._vs[l] ?? null,
  };
}

async function run(op: string, naive: boolean, q: Tensor, k: Tensor | KVView, v: Tensor | null, opts: AttentionOptions): Promise<Tensor> {
  checkOptions(op, opts);
  const Q = expectTensor(op, 'q', q, ['f32', 'f16', 'bf16'], 4);
  nonEmpty(op, 'q', Q);
  if (Q.dtype !== 'f32' && Q.device === 'cpu') throw new TypeError(`${op}: ${Q.dtype} queries run on cuda only; on the cpu q must be f32`);
  let kv: KvArgs;
  if (k instanceof KVView) {
    if (v !== null && v !== undefined) throw new TypeError(`${op}: pass null for 'v' with a cache view`);
    kv = kvFromView(op, k);
  } else {
    kv = kvFromTensors(op, k, v);
  }
  if (naive && kv.code !== 0) throw new TypeError(`${op}: the materialising version takes f32 keys and values only`);
  const [b, hq, tq, d] = Q.shape as [number, number, number, number];
  if (b !== kv.b) throw new RangeError(`${op}: q has batch ${b} but the keys have batch ${kv.b}`);
  if (d !== kv.d) throw new RangeError(`${op}: q has head dim ${d} but the keys have head dim ${kv.d}`);
  if (hq % kv.hkv !== 0) throw new RangeError(`${op}: query heads (${hq}) must be a multiple of key/value heads (${kv.hkv})`);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new RangeError(`${op}: scale must be a finite number; got ${describe(scale)}`);
  const causal = opts.causal ?? false;
  if (typeof causal !== 'boolean') throw new TypeError(`${op}: causal must be a boolean; got ${describe(causal)}`);
  let mask: Tensor | null = null, sb = 0, sh = 0;
  if (opts.mask !== undefined) {
    mask = expectTensor(op, 'mask', opts.mask, ['f32']);
    const s = mask.shape;
    const ok = (s.length === 2 && s[0] === tq && s[1] === kv.tk) ||
      (s.length === 4 && (s[0] === b || s[0] === 1) && (s[1] === hq || s[1] === 1) && s[2] === tq && s[3] === kv.tk);
    if (!ok) throw new RangeError(`${op}: mask must have shape [${tq}, ${kv.tk}] or [${b} | 1, ${hq} | 1, ${tq}, ${kv.tk}]; got [${s.join(', ')}]`);
    if (s.length === 4) {
      sh = s[1] === 1 ? 0 : tq * kv.tk;
      sb = s[0] === 1 ? 0 : s[1]! * tq * kv.tk;
    }
  }
  const dev = sameDevice(op, { q: Q, k: kv.k, v: kv.v, mask });
  if (naive && dev !== 'cpu') throw new TypeError(`${op}: runs on the CPU only`);
  const qType = Q.dtype === 'f32' ? 0 : Q.dtype === 'f16' ? 1 : 2;
  const nat = loadNative();
  return withOutput([b, hq, tq, d], Q.dtype, (out) => nat.attention({
    q: Q._storage, qOff: Q._offset, b, hq, tq, d, hkv: kv.hkv, tk: kv.tk, cap: kv.cap, kvType: kv.code,
    k: kv.k._storage, kOff: kv.k._offset, v: kv.v._storage, vOff: kv.v._offset,
    ks: kv.ks?._storage ?? null, ksOff: kv.ks?._offset ?? 0, vs: kv.vs?._storage ?? null, vsOff: kv.vs?._offset ?? 0,
    mask: mask?._storage ?? null, maskOff: mask?._offset ?? 0, maskSb: sb, maskSh: sh, scale, causal,
    out: out._storage, outOff: out._offset, naive, qType,
  }), dev);
}

/**
 * softmax(scale * q k^T + mask) v for q f32 [b, hq, tq, d] and k, v f32/f16
 * [b, hkv, tk, d] (hq a multiple of hkv: grouped-query attention), or a cache
 * view with v = null. Returns f32 [b, hq, tq, d]. Query rows that see no key
 * (causal with tq > tk, or an all -Infinity mask row) come out as zeros.
 * On cuda (every operand on the GPU): q, k, v may also be f16 or bf16 (f32
 * accumulation; d <= 256) and the output has q's dtype.
 */
export function attention(q: Tensor, k: Tensor | KVView, v: Tensor | null, opts: AttentionOptions = {}): Promise<Tensor> {
  return run('attention', false, q, k, v, opts);
}

/** The textbook version (materialises each head's [tq, tk] score matrix), for comparisons. f32 only. */
export function attentionNaive(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Promise<Tensor> {
  return run('attentionNaive', true, q, k, v, opts);
}
