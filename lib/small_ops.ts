// small_ops.ts - the decoder's small ops: RMSNorm, RoPE, SwiGLU, softmax and
// residual add. f32 only; validated here, run off the JS thread.
import { checkOptions, expectDim, expectTensor, nonEmpty, sameDevice, withOutput } from './errors';
import { loadNative } from './native';
import { Tensor } from './tensor';

function sameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new RangeError(`${op}: shapes must match; got [${a.shape.join(', ')}] and [${b.shape.join(', ')}]`);
  }
}

function lastDim(op: string, t: Tensor): number {
  const d = t.shape[t.shape.length - 1];
  if (d === undefined) throw new RangeError(`${op}: argument 'x' needs at least 1 dimension`);
  return d;
}

export interface RmsNormOptions {
  /** added to the mean square (default 1e-5) */
  eps?: number;
}

/** y = x / sqrt(mean(x^2 over the last dim) + eps) * weight. */
export async function rmsnorm(x: Tensor, weight: Tensor, opts: RmsNormOptions = {}): Promise<Tensor> {
  checkOptions('rmsnorm', opts);
  const op = 'rmsnorm';
  const X = expectTensor(op, 'x', x, ['f32']);
  nonEmpty(op, 'x', X);
  const d = lastDim(op, X);
  const W = expectTensor(op, 'weight', weight, ['f32'], 1);
  expectDim(op, 'weight length (the last dimension of x)', W.shape[0]!, d);
  const eps = opts.eps ?? 1e-5;
  if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) throw new RangeError(`${op}: eps must be a finite number >= 0; got ${String(eps)}`);
  const dev = sameDevice(op, { x: X, weight: W });
  return withOutput([...X.shape], 'f32', (out) =>
    loadNative().rmsnorm(X._storage, X._offset, X.numel / d, d, W._storage, W._offset, eps, out._storage, out._offset), dev);
}

/** Softmax over the last dimension (the row max is subtracted first, so large inputs stay finite). */
export async function softmax(x: Tensor): Promise<Tensor> {
  const op = 'softmax';
  const X = expectTensor(op, 'x', x, ['f32']);
  nonEmpty(op, 'x', X);
  const n = lastDim(op, X);
  return withOutput([...X.shape], 'f32', (out) => loadNative().softmax(X._storage, X._offset, X.numel / n, n, out._storage, out._offset), X.device);
}

/** silu(a) * b elementwise (the gated FFN activation of Llama). */
export async function swiglu(a: Tensor, b: Tensor): Promise<Tensor> {
  return binary('swiglu', a, b);
}

/** a + b elementwise (residual add). */
export async function add(a: Tensor, b: Tensor): Promise<Tensor> {
  return binary('add', a, b);
}

async function binary(op: 'swiglu' | 'add', a: Tensor, b: Tensor): Promise<Tensor> {
  const A = expectTensor(op, 'a', a, ['f32']);
  const B = expectTensor(op, 'b', b, ['f32']);
  sameShape(op, A, B);
  nonEmpty(op, 'a', A);
  const nat = loadNative();
  const dev = sameDevice(op, { a: A, b: B });
  return withOutput([...A.shape], 'f32', (out) => nat[op](A._storage, A._offset, B._storage, B._offset, A.numel, out._storage, out._offset), dev);
}

export interface RopeOptions {
  /** position of the first row along t (default 0): the cache length when decoding */
  offset?: number;
  /** base of the frequencies (default 10000) */
  theta?: number;
  /** 'interleaved': pairs (2i, 2i+1) as in Llama / llama2.c (default); 'neox': pairs (i, i + d/2) */
  layout?: 'interleaved' | 'neox';
}

/** Rotary position embedding of x [..., t, d] (e.g. [b, h, t, d]): row t is at position
 *  offset + t, pair i turns by position * theta^(-2i/d). Returns a new tensor. */
export async function rope(x: Tensor, opts: RopeOptions = {}): Promise<Tensor> {
  checkOptions('rope', opts);
  const op = 'rope';
  const X = expectTensor(op, 'x', x, ['f32']);
  if (X.shape.length < 2) throw new RangeError(`${op}: x must have shape [..., t, d]; got [${X.shape.join(', ')}]`);
  nonEmpty(op, 'x', X);
  const [t, d] = X.shape.slice(-2) as [number, number];
  const offset = opts.offset ?? 0, theta = opts.theta ?? 10000, layout = opts.layout ?? 'interleaved';
  if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`${op}: offset must be a non-negative integer; got ${String(offset)}`);
  if (typeof theta !== 'number' || !(theta > 0) || !Number.isFinite(theta)) throw new RangeError(`${op}: theta must be a positive number; got ${String(theta)}`);
  if (layout !== 'interleaved' && layout !== 'neox') throw new TypeError(`${op}: layout must be 'interleaved' or 'neox'; got ${String(layout)}`);
  return withOutput([...X.shape], 'f32', (out) =>
    loadNative().rope(X._storage, X._offset, X.numel / (t * d), t, d, offset, theta, layout === 'neox', out._storage, out._offset), X.device);
}
