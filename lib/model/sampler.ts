// sampler.ts - next-token choice from logits: greedy (ties to the lower id),
// or temperature softmax restricted by top-k and top-p (nucleus), drawn from a
// seeded generator so runs are reproducible.
import { loadNative } from '../native';
import { Rng } from '../tensor';

export interface SamplingOptions {
  /** 0 (default) = greedy */
  temperature?: number;
  /** keep the k most likely tokens (0 = all) */
  topK?: number;
  /** keep the smallest set of tokens whose probability reaches p (1 = all) */
  topP?: number;
  seed?: number;
}

export function checkSampling(op: string, o: SamplingOptions): void {
  const t = o.temperature ?? 0, k = o.topK ?? 0, p = o.topP ?? 1;
  if (typeof t !== 'number' || !(t >= 0) || !Number.isFinite(t)) throw new RangeError(`${op}: temperature must be a finite number >= 0; got ${String(t)}`);
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`${op}: topK must be an integer >= 0; got ${String(k)}`);
  if (typeof p !== 'number' || !(p > 0 && p <= 1)) throw new RangeError(`${op}: topP must be in (0, 1]; got ${String(p)}`);
  if (o.seed !== undefined && (!Number.isInteger(o.seed) || o.seed < 0)) throw new RangeError(`${op}: seed must be a non-negative integer; got ${String(o.seed)}`);
}

export class Sampler {
  private readonly rng: Rng;
  private keys = new Float64Array(0);  // sort keys, reused across tokens
  constructor(private readonly o: SamplingOptions) {
    this.rng = new Rng(o.seed);
  }

  sample(logits: Float32Array): number {
    // NaN or +Infinity (a model with non-finite weights or inputs) would pick an arbitrary token
    const bad = (i: number) => new RangeError(`generate: the model's logits are not finite (token ${i}: ${logits[i]}); its weights or inputs hold NaN or Infinity`);
    const t = this.o.temperature ?? 0;
    if (t === 0) {
      // greedy: the check and the argmax in one native pass (AVX2: ~3 us for 32K logits,
      // a JS loop ~70 us); ties go to the lower id
      const best = loadNative().argmax(logits);
      if (best < 0) throw bad(-1 - best);
      return best;
    }
    for (let i = 0; i < logits.length; i++) if (!(logits[i]! < Infinity)) throw bad(i);
    const n = logits.length;
    let mx = -Infinity;
    for (let i = 0; i < n; i++) mx = Math.max(mx, logits[i]!);
    // Tokens more than 40 nats below the best weigh < 4e-18 of it (all of a 32K vocab
    // together < 2e-13); leaving them out keeps the sort to the plausible ones.
    const floor = mx - 40 * t;
    const k = this.o.topK ?? 0, p = this.o.topP ?? 1;
    let idx: number[] = [];
    if (((k > 0 && k < n) || p < 1) && n > 4194304) {
      for (let i = 0; i < n; i++) if (logits[i]! >= floor) idx.push(i);  // vocab past 2^22: comparator sort
      idx.sort((a, b) => logits[b]! - logits[a]! || a - b);
      if (k > 0) idx = idx.slice(0, k);
    } else if ((k > 0 && k < n) || p < 1) {
      // descending logit, ascending id on ties, through one numeric typed-array sort:
      // key = (order-reversed float bits) * 2^22 + id, exact in a float64
      const bits = new Uint32Array(logits.buffer, logits.byteOffset, n);
      if (this.keys.length < n) this.keys = new Float64Array(n);
      const keys = this.keys;
      let c = 0;
      for (let i = 0; i < n; i++) {
        if (!(logits[i]! >= floor)) continue;
        const b = bits[i]!, u = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
        keys[c++] = (0xffffffff - u) * 4194304 + i;
      }
      const sorted = keys.subarray(0, c).sort();
      const take = k > 0 ? Math.min(k, c) : c;
      for (let j = 0; j < take; j++) idx.push(sorted[j]! % 4194304);
    } else {
      for (let i = 0; i < n; i++) if (logits[i]! >= floor) idx.push(i);
    }
    const w = idx.map((i) => Math.exp((logits[i]! - mx) / t));
    let sum = w.reduce((a, b) => a + b, 0);
    if (p < 1) {
      let acc = 0, cut = w.length;
      for (let j = 0; j < w.length; j++) {
        acc += w[j]! / sum;
        if (acc >= p) { cut = j + 1; break; }
      }
      idx = idx.slice(0, cut);
      w.length = cut;
      sum = w.reduce((a, b) => a + b, 0);
    }
    let r = this.rng.next() * sum;
    for (let j = 0; j < w.length; j++) {
      r -= w[j]!;
      if (r <= 0) return idx[j]!;
    }
    return idx[idx.length - 1]!;
  }
}
