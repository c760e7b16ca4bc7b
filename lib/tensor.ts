// tensor.ts - the Tensor type: row-major, contiguous, natively owned memory
// (64-byte aligned). Created from TypedArrays or helpers, read back by copy.
// Freed by dispose() / `using`, and by a finalizer as a safety net.
import { loadNative, type NativeStorage } from './native';

export type DType = 'f32' | 'f16' | 'bf16' | 'i8' | 'u8' | 'i32';
export type Device = 'cpu' | 'cuda';
export const DEVICES: readonly Device[] = ['cpu', 'cuda'];

/** 'cpu', 'cuda' or 'cuda:0' (one device: 'cuda' means device 0) -> Device, else a TypeError. */
export function parseDevice(op: string, d: unknown): Device {
  if (d === 'cpu') return 'cpu';
  if (d === 'cuda' || d === 'cuda:0') return 'cuda';
  throw new TypeError(`${op}: device must be 'cpu' or 'cuda'; got ${typeof d === 'string' ? `'${d}'` : String(d)}`);
}
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i8', 'u8', 'i32'];

const BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i8: 1, u8: 1, i32: 4 };
export function dtypeBytes(d: DType): number {
  return BYTES[d];
}

export type TypedArrayFor<D extends DType> = D extends 'f32' ? Float32Array
  : D extends 'i8' ? Int8Array
  : D extends 'u8' ? Uint8Array
  : D extends 'i32' ? Int32Array
  : Uint16Array;

type AnyTyped = Float32Array | Int8Array | Uint8Array | Int32Array | Uint16Array;

// Largest element count accepted (2^40): far past any real tensor, small
// enough that byte sizes stay exact in doubles.
const MAX_ELEMENTS = 2 ** 40;

function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${op}: shape must be an array of integers; got ${typeof shape}`);
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      throw new RangeError(`${op}: shape entries must be non-negative integers; got [${shape.join(', ')}]`);
    }
    n *= d;
  }
  if (n > MAX_ELEMENTS) throw new RangeError(`${op}: shape [${shape.join(', ')}] has ${n} elements, over the limit of 2^40`);
  return shape.slice() as number[];
}

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function dtypeOfArray(a: ArrayBufferView): DType | undefined {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Int8Array) return 'i8';
  if (a instanceof Uint8Array) return 'u8';
  if (a instanceof Int32Array) return 'i32';
  return undefined;
}

function viewOf(dtype: DType, buf: ArrayBuffer): AnyTyped {
  switch (dtype) {
    case 'f32': return new Float32Array(buf);
    case 'i8': return new Int8Array(buf);
    case 'u8': return new Uint8Array(buf);
    case 'i32': return new Int32Array(buf);
    default: return new Uint16Array(buf);
  }
}

// --- f16 / bf16 conversion -----------------------------------------------------
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function f32ToF16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >> shift;
    const rem = mant & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

export function bf16ToF32(h: number): number {
  u32buf[0] = h << 16;
  return f32buf[0]!;
}

export function f32ToBf16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;  // quiet NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

// --- seeded random numbers (xoshiro128**) ---------------------------------------
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number = (Math.random() * 2 ** 32) >>> 0) {
    let z = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      z = (z + 0x9e3779b9) >>> 0;
      let t = z;
      t = Math.imul(t ^ (t >>> 16), 0x85ebca6b);
      t = Math.imul(t ^ (t >>> 13), 0xc2b2ae35);
      this.s[i] = (t ^ (t >>> 16)) >>> 0;
    }
  }
  nextU32(): number {
    const s = this.s;
    const r = Math.imul(((Math.imul(s[1]!, 5) << 7) | (Math.imul(s[1]!, 5) >>> 25)), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!; s[3]! ^= s[1]!; s[1]! ^= s[2]!; s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = (s[3]! << 11) | (s[3]! >>> 21);
    return r;
  }
  /** uniform in [0, 1) */
  next(): number {
    return this.nextU32() / 4294967296;
  }
  /** standard normal (Box-Muller) */
  normal(): number {
    const u = 1 - this.next(), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

export interface RandOptions {
  dtype?: DType;
  /** uniform range (default [-1, 1) for floats, the full range for integers) */
  min?: number;
  max?: number;
  /** normal distribution with this standard deviation instead of uniform */
  std?: number;
  seed?: number;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** @internal */ readonly _storage: NativeStorage;
  /** @internal byte offset into the storage (views) */ readonly _offset: number;
  private readonly owner: boolean;
  private released = false;

  /** @internal use Tensor.from / zeros / rand */
  constructor(storage: NativeStorage, shape: readonly number[], dtype: DType, offset = 0, owner = true) {
    this._storage = storage;
    this.shape = Object.freeze(shape.slice());
    this.dtype = dtype;
    this._offset = offset;
    this.owner = owner;
  }

  /** @internal allocate a zeroed tensor (device memory for 'cuda') */
  static _alloc(shape: readonly number[], dtype: DType, device: Device = 'cpu', op = 'Tensor'): Tensor {
    const Storage = loadNative().Storage;
    const bytes = numelOf(shape) * BYTES[dtype];
    if (device === 'cpu') return new Tensor(new Storage(bytes), shape, dtype);
    let storage: NativeStorage;
    try {
      storage = new Storage(bytes, 'cuda');
    } catch (e) {
      // the addon throws Error when there is no device, RangeError when the memory is not there
      throw new (e instanceof RangeError ? RangeError : Error)(`${op}: ${(e as Error).message.replace(/^Storage: /, '')}. sparq.info().cuda shows what this build and machine have.`);
    }
    return new Tensor(storage, shape, dtype);
  }

  /** 'cpu', or 'cuda' when the memory is on the GPU. */
  get device(): Device {
    return this._storage.device === 'cuda' ? 'cuda' : 'cpu';
  }

  /** A copy of this tensor on `device` ('cpu' or 'cuda'); always a new tensor, even on the
   *  same device. Host <-> device copies are synchronous (like Tensor.from). Throws an Error
   *  naming the reason when no CUDA device is available. */
  to(device: Device | 'cuda:0'): Tensor {
    const op = `Tensor.to('${String(device)}')`;
    const dev = parseDevice(op, device);
    this._check(op);
    const t = Tensor._alloc(this.shape, this.dtype, dev, op);
    try {
      if (this.byteLength > 0) t._storage.write(new Uint8Array(this._storage.read(this._offset, this.byteLength)), 0);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /** Copies `data` into a new tensor. Float32Array -> f32, Int8Array -> i8, Uint8Array -> u8,
   *  Int32Array -> i32; Uint16Array holds raw f16 or bf16 bits and needs the dtype. A plain
   *  number array is converted to `dtype` (default f32). */
  static from(data: ArrayBufferView | readonly number[], shape?: readonly number[], dtype?: DType): Tensor {
    const op = 'Tensor.from';
    if (dtype !== undefined && !DTYPES.includes(dtype)) {
      throw new TypeError(`${op}: dtype must be one of ${DTYPES.join(', ')}; got ${String(dtype)}`);
    }
    if (Array.isArray(data)) {
      const d = dtype ?? 'f32';
      const arr = data as readonly number[];
      return Tensor.from(encode(d, arr), shape ?? [arr.length], d);
    }
    if (!ArrayBuffer.isView(data) || data instanceof DataView) {
      throw new TypeError(`${op}: data must be a TypedArray or an array of numbers; got ${typeof data}`);
    }
    let d: DType | undefined = dtypeOfArray(data);
    if (data instanceof Uint16Array) {
      if (dtype !== 'f16' && dtype !== 'bf16') throw new TypeError(`${op}: a Uint16Array needs dtype 'f16' or 'bf16'`);
      d = dtype;
    }
    if (d === undefined) throw new TypeError(`${op}: unsupported array type ${data.constructor.name}`);
    if (dtype !== undefined && dtype !== d) {
      throw new TypeError(`${op}: a ${data.constructor.name} holds ${d}, not ${dtype}; convert the data first`);
    }
    const count = typedByteLength(data) / BYTES[d];
    const s = checkShape(op, shape ?? [count]);
    if (numelOf(s) !== count) {
      throw new RangeError(`${op}: shape [${s.join(', ')}] needs ${numelOf(s)} elements; data has ${count}`);
    }
    const t = Tensor._alloc(s, d);
    if (count > 0) t._storage.write(data, 0);
    return t;
  }

  static zeros(shape: readonly number[], dtype: DType = 'f32', device: Device = 'cpu'): Tensor {
    if (!DTYPES.includes(dtype)) throw new TypeError(`Tensor.zeros: dtype must be one of ${DTYPES.join(', ')}; got ${String(dtype)}`);
    return Tensor._alloc(checkShape('Tensor.zeros', shape), dtype, parseDevice('Tensor.zeros', device), 'Tensor.zeros');
  }

  static full(shape: readonly number[], value: number, dtype: DType = 'f32'): Tensor {
    const op = 'Tensor.full';
    if (!DTYPES.includes(dtype)) throw new TypeError(`${op}: dtype must be one of ${DTYPES.join(', ')}; got ${String(dtype)}`);
    if (typeof value !== 'number') throw new TypeError(`${op}: value must be a number; got ${typeof value}`);
    const s = checkShape(op, shape);
    const one = encode(dtype, [value]);
    return fillChunks(op, s, dtype, (chunk) => chunk.fill(one[0]!));
  }

  /** Random tensor: uniform (default [-1, 1) for floats, full range for integers) or normal
   *  with `std`; reproducible with `seed`. */
  static rand(shape: readonly number[], opts: RandOptions = {}): Tensor {
    const op = 'Tensor.rand';
    const s = checkShape(op, shape);
    if (typeof opts !== 'object' || opts === null) throw new TypeError(`${op}: options must be an object`);
    const dtype = opts.dtype ?? 'f32';
    if (!DTYPES.includes(dtype)) throw new TypeError(`${op}: dtype must be one of ${DTYPES.join(', ')}`);
    const rng = new Rng(opts.seed);
    const isInt = dtype === 'i8' || dtype === 'u8' || dtype === 'i32';
    const range = { i8: [-128, 127], u8: [0, 255], i32: [-(2 ** 31), 2 ** 31 - 1] } as Record<string, number[]>;
    const lo = opts.min ?? (isInt ? range[dtype]![0]! : -1);
    const hi = opts.max ?? (isInt ? range[dtype]![1]! : 1);
    const std = opts.std;
    if (std !== undefined && !(Number.isFinite(std) && std >= 0)) throw new RangeError(`${op}: std must be a finite number >= 0; got ${String(std)}`);
    if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo <= hi)) throw new RangeError(`${op}: min and max must be finite with min <= max; got ${String(lo)}, ${String(hi)}`);
    return fillChunks(op, s, dtype, (_chunk, vals) => {
      for (let i = 0; i < vals.length; i++) {
        if (std !== undefined) vals[i] = rng.normal() * std;
        else if (isInt) vals[i] = lo + Math.floor(rng.next() * (hi - lo + 1));
        else vals[i] = lo + rng.next() * (hi - lo);
      }
      return encode(dtype, vals);
    });
  }

  get disposed(): boolean {
    return this.released || this._storage.disposed;
  }
  get numel(): number {
    return numelOf(this.shape);
  }
  get byteLength(): number {
    return this.numel * BYTES[this.dtype];
  }

  /** @internal */
  _check(op: string): void {
    if (this.disposed) throw new TypeError(`${op}: tensor has been disposed`);
  }

  /** A copy of the raw elements (f16/bf16: their bits as a Uint16Array). */
  data(): AnyTyped {
    this._check('Tensor.data');
    return viewOf(this.dtype, this._storage.read(this._offset, this.byteLength));
  }

  /** A copy of the elements; f16/bf16 are decoded to a Float32Array. */
  toArray(): Float32Array | Int8Array | Uint8Array | Int32Array {
    const raw = this.data();
    if (this.dtype !== 'f16' && this.dtype !== 'bf16') return raw as Float32Array | Int8Array | Uint8Array | Int32Array;
    const dec = this.dtype === 'f16' ? f16ToF32 : bf16ToF32;
    const out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = dec(raw[i]!);
    return out;
  }

  /** A new tensor with the values converted to `dtype` (floats round to nearest even; integer
   *  targets round and saturate). */
  cast(dtype: DType): Tensor {
    this._check('Tensor.cast');
    const src = this.toArray();
    const t = Tensor.from(encode(dtype, src), this.shape, dtype);
    if (this.device === 'cpu') return t;
    try {
      return t.to(this.device);
    } finally {
      t.dispose();
    }
  }

  /** A view of rows [start, end) along dimension 0, sharing memory. */
  slice(start: number, end: number = this.shape[0] ?? 0): Tensor {
    this._check('Tensor.slice');
    const rows = this.shape[0];
    if (rows === undefined) throw new RangeError('Tensor.slice: a 0-d tensor has no rows to slice');
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > rows || start > end) {
      throw new RangeError(`Tensor.slice: need 0 <= start <= end <= ${rows}; got [${start}, ${end})`);
    }
    const rowBytes = (this.numel / rows || 0) * BYTES[this.dtype];
    return new Tensor(this._storage, [end - start, ...this.shape.slice(1)], this.dtype, this._offset + start * rowBytes, false);
  }

  /** Same data, new shape (same element count). A view. */
  reshape(shape: readonly number[]): Tensor {
    this._check('Tensor.reshape');
    const s = checkShape('Tensor.reshape', shape);
    if (numelOf(s) !== this.numel) {
      throw new RangeError(`Tensor.reshape: cannot view [${this.shape.join(', ')}] as [${s.join(', ')}]`);
    }
    return new Tensor(this._storage, s, this.dtype, this._offset, false);
  }

  /** Frees the native memory now (views: detaches the view only). Safe to call twice. */
  dispose(): void {
    if (this.released) return;
    this.released = true;
    if (this.owner) this._storage.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}]${this.device === 'cuda' ? ', cuda' : ''}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Encodes numbers into the typed array of `dtype`. */
// TypedArray.prototype's byteLength getter: an own `byteLength` property on the
// array (or a subclass getter) cannot make the data look longer than it is
const byteLengthGetter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int8Array.prototype) as object, 'byteLength')!.get!;
const typedByteLength = (a: ArrayBufferView): number => byteLengthGetter.call(a) as number;

/**
 * A new cpu tensor written a million elements at a time (no JS array of the whole
 * size): make(chunk, vals) returns the encoded elements of the next chunk, from the
 * typed `chunk` or the f64 scratch `vals` it is handed (both of the chunk's length).
 */
function fillChunks(op: string, s: number[], dtype: DType, make: (chunk: AnyTyped, vals: Float64Array) => AnyTyped): Tensor {
  const t = Tensor._alloc(s, dtype, 'cpu', op);
  const n = numelOf(s), step = Math.min(n, 1 << 20);
  const chunk = encode(dtype, new Float64Array(step)), vals = new Float64Array(step);
  for (let i = 0; i < n; i += step) {
    const m = Math.min(step, n - i);
    t._storage.write(make(chunk.subarray(0, m), vals.subarray(0, m)), i * BYTES[dtype]);
  }
  return t;
}

export function encode(dtype: DType, vals: ArrayLike<number>): AnyTyped {
  const n = vals.length;
  switch (dtype) {
    case 'f32': return Float32Array.from(vals);
    case 'f16': { const o = new Uint16Array(n); for (let i = 0; i < n; i++) o[i] = f32ToF16(vals[i]!); return o; }
    case 'bf16': { const o = new Uint16Array(n); for (let i = 0; i < n; i++) o[i] = f32ToBf16(vals[i]!); return o; }
    case 'i8': { const o = new Int8Array(n); for (let i = 0; i < n; i++) o[i] = clampRound(vals[i]!, -128, 127); return o; }
    case 'u8': { const o = new Uint8Array(n); for (let i = 0; i < n; i++) o[i] = clampRound(vals[i]!, 0, 255); return o; }
    case 'i32': { const o = new Int32Array(n); for (let i = 0; i < n; i++) o[i] = clampRound(vals[i]!, -(2 ** 31), 2 ** 31 - 1); return o; }
    default: throw new TypeError(`unknown dtype ${String(dtype)}`);
  }
}

function clampRound(v: number, lo: number, hi: number): number {
  if (Number.isNaN(v)) return 0;
  let r = Math.round(v);
  if (Math.abs(v % 1) === 0.5) r = 2 * Math.round(v / 2);  // half to even
  return r < lo ? lo : r > hi ? hi : r;
}
