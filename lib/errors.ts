// errors.ts - argument checks shared by every op: messages name the op, the
// argument, what was expected and what was received.
import { Tensor, type DType, type Device } from './tensor';

export function describe(v: unknown): string {
  if (v instanceof Tensor) return v.disposed ? 'a disposed tensor' : `${v.dtype} tensor of shape [${v.shape.join(', ')}]`;
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return typeof v === 'object' ? `an object (${(v as object).constructor?.name ?? 'Object'})` : `${typeof v} ${String(v)}`;
}

/** Options may be left out; when given they must be an object. */
export function checkOptions(op: string, o: unknown): void {
  if (typeof o !== 'object' || o === null) throw new TypeError(`${op}: options must be an object; got ${describe(o)}`);
}

export function expectTensor(op: string, name: string, v: unknown, dtypes: readonly DType[], rank?: number): Tensor {
  if (!(v instanceof Tensor)) {
    throw new TypeError(`${op}: argument '${name}' must be a ${dtypes.join('/')} Tensor; got ${describe(v)}`);
  }
  if (v.disposed) throw new TypeError(`${op}: argument '${name}' has been disposed`);
  if (!dtypes.includes(v.dtype)) {
    throw new TypeError(`${op}: argument '${name}' must have dtype ${dtypes.join(' or ')}; got ${v.dtype}`);
  }
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

/** A static activation scale (> 0, finite) or 0 for dynamic per-row scales when absent. */
export function inputScaleOf(op: string, v: unknown): number {
  if (v === undefined) return 0;
  if (!(typeof v === 'number' && v > 0 && Number.isFinite(v))) throw new RangeError(`${op}: inputScale must be a positive finite number; got ${String(v)}`);
  return v;
}

/** The device all the given operands share (null / undefined entries are skipped), or a
 *  TypeError naming the ones that differ. */
export function sameDevice(op: string, operands: Record<string, Tensor | null | undefined>): Device {
  let first: [string, Device] | undefined;
  for (const [name, t] of Object.entries(operands)) {
    if (!t) continue;
    if (!first) first = [name, t.device];
    else if (t.device !== first[1]) {
      throw new TypeError(`${op}: all operands must be on the same device; '${first[0]}' is on ${first[1]}, '${name}' is on ${t.device} (move one with .to())`);
    }
  }
  return first ? first[1] : 'cpu';
}

/** A TypeError when `t` is on the GPU and the op has no CUDA version. */
export function cpuOnly(op: string, operands: Record<string, Tensor | null | undefined>): void {
  for (const [name, t] of Object.entries(operands)) {
    if (t && t.device !== 'cpu') throw new TypeError(`${op}: runs on the CPU only; argument '${name}' is on ${t.device} (use .to('cpu'))`);
  }
}

/** Allocates the output (on `device`), runs `fill` on it and returns it; frees it if `fill` fails. */
export async function withOutput(shape: number[], dtype: DType, fill: (out: Tensor) => Promise<void>, device: Device = 'cpu'): Promise<Tensor> {
  const out = Tensor._alloc(shape, dtype, device);
  try {
    await fill(out);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}
