// errors.ts - argument checks shared by every op: messages name the op, the
// argument, what was expected and what was received.
import { Tensor, type DType } from './tensor';

export function describe(v: unknown): string {
  if (v instanceof Tensor) return v.disposed ? 'a disposed tensor' : `${v.dtype} tensor of shape [${v.shape.join(', ')}]`;
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return typeof v === 'object' ? `an object (${(v as object).constructor?.name ?? 'Object'})` : `${typeof v} ${String(v)}`;
}

export function expectTensor(op: string, name: string, v: unknown, dtypes: readonly DType[], rank?: number): Tensor {
  if (!(v instanceof Tensor)) {
    throw new TypeError(`${op}: argument '${name}' must be a ${dtypes.join('/')} Tensor; got ${describe(v)}`);
  }
  if (v.disposed) throw new TypeError(`${op}: argument '${name}' has been disposed`);
  if (!dtypes.includes(v.dtype)) {
    throw new TypeError(`${op}: argument '${name}' must have dtype ${dtypes.join(' or ')}; got ${v.dtype}`);
  }
  if (v.device !== 'cpu') throw new TypeError(`${op}: argument '${name}' must be on the cpu device; got ${v.device}`);
  if (rank !== undefined && v.shape.length !== rank) {
    throw new RangeError(`${op}: argument '${name}' must have ${rank} dimensions; got shape [${v.shape.join(', ')}]`);
  }
  return v;
}

export function expectDim(op: string, what: string, got: number, want: number): void {
  if (got !== want) throw new RangeError(`${op}: ${what} must be ${want}; got ${got}`);
}

export function nonEmpty(op: string, name: string, t: Tensor): void {
  if (t.numel === 0) throw new RangeError(`${op}: argument '${name}' is empty (shape [${t.shape.join(', ')}])`);
}

/** Allocates the output, runs `fill` on it and returns it; frees it if `fill` fails. */
export async function withOutput(shape: number[], dtype: 'f32' | 'i32', fill: (out: Tensor) => Promise<void>): Promise<Tensor> {
  const out = Tensor._alloc(shape, dtype);
  try {
    await fill(out);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}
