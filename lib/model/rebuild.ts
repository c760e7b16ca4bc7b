// rebuild.ts - what pruneModel() and quantizeModel() share: the calibration
// sequences, and the source model's weights re-read from its file in f32 with
// everything made from them owned until the new model holds what it needs.
import { loadNative, type NativeLinear } from '../native';
import { Tensor } from '../tensor';
import { planModel, type Model, type Plan, type WeightRef } from './model';

/** Calibration texts (encoded with BOS) or token id arrays, each cut to `maxTokens` (default min(maxSeq, 512)). */
export function calibrationSequences(op: string, model: Model, cal: readonly (string | readonly number[])[], maxTokens?: number): number[][] {
  const maxTok = Math.min(maxTokens ?? 512, model.config.maxSeq);
  if (!Number.isInteger(maxTok) || maxTok < 1) throw new RangeError(`${op}: calibrationTokens must be a positive integer; got ${String(maxTokens)}`);
  return cal.map((t, i) => {
    if (typeof t === 'string') return model.tokenizer.encode(t).slice(0, maxTok);
    if (!Array.isArray(t) || t.length === 0) throw new TypeError(`${op}: calibration[${i}] must be a string or a non-empty token id array`);
    return t.slice(0, maxTok);
  });
}

/** The model's file re-read in f32, and the owner of what is made from it. */
export class Rebuild {
  private readonly owned: { dispose(): void }[] = [];
  private constructor(readonly op: string, readonly plan: Plan) {}

  static async open(op: string, model: Model, progress: (p: { stage: 'load'; done: number; total: number }) => void): Promise<Rebuild> {
    const src = model._source;
    if (!src || src.derived) throw new TypeError(`${op}: the model must come from loadModel() (it re-reads the weights from the file)`);
    progress({ stage: 'load', done: 0, total: 1 });
    const plan = await planModel(src.file, { ...src.opts, weights: 'f32' }, true);
    progress({ stage: 'load', done: 1, total: 1 });
    return new Rebuild(op, plan);
  }

  /** Disposed by close(). */
  own<T extends { dispose(): void }>(x: T): T {
    this.owned.push(x);
    return x;
  }

  /** An f32 [n, k] view of a planned weight (any other format dequantized: int8 as GGUF Q8_0 tensors plan, saved int8 / int4 / sparse). */
  tensor(ref: WeightRef | undefined, n: number, k: number): Tensor {
    if (!ref) throw new Error(`${this.op}: a weight is missing from the plan`);
    if ('storage' in ref) return this.own(new Tensor(ref.storage, [n, k], 'f32', ref.offset, false));
    const t = this.own(Tensor._alloc([n, k], 'f32'));
    loadNative().linearToF32(ref as NativeLinear, t._storage, t._offset, true);
    return t;
  }

  /** Releases what was made and the plan (the new model holds its own references). */
  close(): void {
    for (const o of this.owned.reverse()) o.dispose();
    this.owned.length = 0;
    for (const t of this.plan.temp) t.dispose();
  }
}
