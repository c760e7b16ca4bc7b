// ops.ts - the GEMM-family ops. Each validates its arguments (dtype, shape,
// device, disposal) on the JS thread, allocates the output and runs the
// kernel off-thread, returning a Promise.
import { CudaWeight } from './cuda';
import { checkOptions, cpuOnly, describe, expectDim, expectTensor, inputScaleOf, nonEmpty, sameDevice, withOutput } from './errors';
import { SparseTensor } from './sparse';
import { loadNative } from './native';
import { QuantizedTensor } from './quantize';
import { Tensor } from './tensor';

export interface LinearOptions {
  /** Static per-tensor activation scale (from an Observer); default: dynamic per-token. */
  inputScale?: number;
}

function checkBias(op: string, bias: Tensor | null | undefined, n: number): Tensor | null {
  if (bias === undefined || bias === null) return null;
  const b = expectTensor(op, 'bias', bias, ['f32'], 1);
  expectDim(op, "bias length (the weight's output features n)", b.shape[0]!, n);
  return b;
}

const MATMUL_S8_MAX_K = 131071;
const LINEAR_S8_MAX_GROUP_K = 131072;

/** Exact int32 C[m, n] = a[m, k] . b[n, k]^T for int8 a and b (k <= 131071). */
export async function matmulInt8(a: Tensor, b: Tensor): Promise<Tensor> {
  const op = 'matmulInt8';
  const A = expectTensor(op, 'a', a, ['i8'], 2);
  const B = expectTensor(op, 'b', b, ['i8'], 2);
  nonEmpty(op, 'a', A);
  nonEmpty(op, 'b', B);
  const [m, k] = A.shape as [number, number];
  const [n, kb] = B.shape as [number, number];
  expectDim(op, `b.shape[1] (k of a: [${m}, ${k}])`, kb, k);
  // 131072 products of -128 x -128 sum to 2^31, one past int32
  if (k > MATMUL_S8_MAX_K) throw new RangeError(`${op}: k must be at most ${MATMUL_S8_MAX_K} for exact int32 sums; got ${k}`);
  const nat = loadNative();
  if (sameDevice(op, { a: A, b: B }) === 'cuda') {
    return withOutput([m, n], 'i32', (out) => nat.cudaMatmulS8(A._storage, A._offset, m, k, B._storage, B._offset, n, out._storage, out._offset), 'cuda');
  }
  const packed = await nat.packS8(B._storage, B._offset, n, k);
  try {
    return await withOutput([m, n], 'i32', (out) => nat.matmulS8(A._storage, A._offset, m, k, packed, out._storage, out._offset));
  } finally {
    packed.dispose();
  }
}

/** y[m, n] = x[m, k] . w[n, k]^T + bias (nn.Linear). With a QuantizedTensor weight the
 *  activations are quantized per token (row) to int8 on the fly (or with a static
 *  `inputScale`), multiplied by the int8 GEMM and dequantized in the epilogue. On the GPU:
 *  x on cuda with an f32 Tensor weight on cuda, or a CudaWeight (from QuantizedTensor /
 *  SparseTensor .to('cuda')); the output is on cuda. */
export async function linear(x: Tensor, w: Tensor | QuantizedTensor | SparseTensor | CudaWeight, bias?: Tensor | null, opts: LinearOptions = {}): Promise<Tensor> {
  const op = 'linear';
  checkOptions(op, opts);
  const X = expectTensor(op, 'x', x, ['f32'], 2);
  nonEmpty(op, 'x', X);
  const [m, k] = X.shape as [number, number];
  const nat = loadNative();
  if (w instanceof CudaWeight) {
    const dw = w._check(op);
    const [n, kw] = w.shape;
    expectDim(op, `w.shape[1] (k of x: [${m}, ${k}])`, kw, k);
    const B = checkBias(op, bias, n);
    if (sameDevice(op, { x: X, bias: B }) !== 'cuda') throw new TypeError(`${op}: the weight is on cuda but 'x' is on the cpu (move it with x.to('cuda'))`);
    if (opts.inputScale !== undefined) throw new TypeError(`${op}: a static inputScale is fixed when the weight moves: quantized.to('cuda', { inputScale })`);
    return withOutput([m, n], 'f32', (out) => nat.cudaLinear(X._storage, X._offset, m, k, dw, B?._storage ?? null, B?._offset ?? 0, out._storage, out._offset), 'cuda');
  }
  if ((w instanceof QuantizedTensor || w instanceof SparseTensor) && X.device !== 'cpu') {
    throw new TypeError(`${op}: 'x' is on cuda but the ${w.constructor.name} weight is on the cpu (move it with await w.to('cuda'))`);
  }
  if (w instanceof QuantizedTensor) {
    w._check(op);
    const [n, kw] = w.shape;
    expectDim(op, `w.shape[1] (k of x: [${m}, ${k}])`, kw, k);
    const B = checkBias(op, bias, n);
    const s = inputScaleOf(op, opts.inputScale);
    // the exact int32 sums of one scale group: 127 * 128 * 2^17 < 2^31
    const groupK = Math.min(w.groupSize, kw);
    if (groupK > LINEAR_S8_MAX_GROUP_K)
      throw new RangeError(`${op}: a scale group of ${groupK} values could overflow the exact int32 sums (at most ${LINEAR_S8_MAX_GROUP_K}); quantize with granularity 'per-group'`);
    return withOutput([m, n], 'f32', (out) =>
      nat.linearS8(X._storage, X._offset, m, k, w._packed, B?._storage ?? null, B?._offset ?? 0, s, out._storage, out._offset));
  }
  if (w instanceof SparseTensor) {
    const s = w._check(op);
    const [n, kw] = w.shape;
    expectDim(op, `w.shape[1] (k of x: [${m}, ${k}])`, kw, k);
    if (opts.inputScale !== undefined) throw new TypeError(`${op}: inputScale applies to int8 dense weights only (sparse int8 keeps f32 activations)`);
    const B = checkBias(op, bias, n);
    return withOutput([m, n], 'f32', (out) => nat.spmm(s, X._storage, X._offset, m, B?._storage ?? null, B?._offset ?? 0, out._storage, out._offset));
  }
  if (!(w instanceof Tensor)) throw new TypeError(`${op}: argument 'w' must be an f32 Tensor, a QuantizedTensor or a SparseTensor; got ${describe(w)}`);
  const W = expectTensor(op, 'w', w, ['f32'], 2);
  nonEmpty(op, 'w', W);
  const [n, kw] = W.shape as [number, number];
  expectDim(op, `w.shape[1] (k of x: [${m}, ${k}])`, kw, k);
  if (opts.inputScale !== undefined) throw new TypeError(`${op}: inputScale applies to quantized weights only`);
  const B = checkBias(op, bias, n);
  const dev = sameDevice(op, { x: X, w: W, bias: B });
  return withOutput([m, n], 'f32', (out) =>
    nat.linearF32(X._storage, X._offset, m, k, W._storage, W._offset, n, B?._storage ?? null, B?._offset ?? 0, out._storage, out._offset), dev);
}

/** c[m, n] = a[m, k] . b[k, n] in f32. */
export async function matmul(a: Tensor, b: Tensor): Promise<Tensor> {
  const op = 'matmul';
  const A = expectTensor(op, 'a', a, ['f32'], 2);
  const B = expectTensor(op, 'b', b, ['f32'], 2);
  nonEmpty(op, 'a', A);
  nonEmpty(op, 'b', B);
  const [m, k] = A.shape as [number, number];
  const [kb, n] = B.shape as [number, number];
  expectDim(op, `b.shape[0] (k of a: [${m}, ${k}])`, kb, k);
  cpuOnly(op, { a: A, b: B });
  return withOutput([m, n], 'f32', (out) =>
    loadNative().matmulF32(A._storage, A._offset, m, k, B._storage, B._offset, n, null, 0, out._storage, out._offset));
}
