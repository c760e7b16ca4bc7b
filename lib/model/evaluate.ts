// evaluate.ts - what a compressed model costs in accuracy, measured as
// llama.cpp's perplexity tool does with --kl-divergence: perplexity of both
// models on the same tokens, and per-position KL divergence and top-1
// agreement of the candidate's next-token distribution against the
// reference's. One forward pass per window of `contextLength` tokens.
import { checkOptions, describe } from '../errors';
import type { Model } from './model';

export interface EvaluateOptions {
  /** evaluation text, each encoded with BOS by the reference's tokenizer */
  texts?: readonly string[];
  /** or token id sequences */
  tokens?: readonly (readonly number[])[];
  /** tokens per window (default min(256, both models' maxSeq)); sequences are cut into windows */
  contextLength?: number;
  onProgress?: (p: { done: number; total: number }) => void;
}

export interface EvaluationResult {
  /** exp(mean negative log-likelihood of each next token), candidate */
  perplexity: number;
  referencePerplexity: number;
  /** mean over positions of KL(reference || candidate) of the next-token distributions (nats) */
  meanKLD: number;
  kldPercentiles: { p50: number; p90: number; p99: number };
  /** fraction of positions where both models' most likely next token is the same */
  top1Agreement: number;
  /** positions scored (each predicts the token after it) */
  tokens: number;
  windows: number;
}

/** log-softmax of l into out (f64) */
function logSoftmax(l: Float32Array, out: Float64Array): void {
  let m = -Infinity;
  for (let i = 0; i < l.length; i++) if (l[i]! > m) m = l[i]!;
  let z = 0;
  for (let i = 0; i < l.length; i++) z += Math.exp(l[i]! - m);
  const lz = m + Math.log(z);
  for (let i = 0; i < l.length; i++) out[i] = l[i]! - lz;
}

function argmax(l: Float32Array): number {
  let b = 0;
  for (let i = 1; i < l.length; i++) if (l[i]! > l[b]!) b = i;  // ties: the lower id
  return b;
}

/** nearest-rank percentile of sorted values */
function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/**
 * Scores `candidate` against `reference` on the same tokens. Every window is run
 * from an empty context through both models (their contexts are reset); every
 * position with a next token inside the window is scored.
 */
export async function evaluate(candidate: Model, reference: Model, opts: EvaluateOptions = {}): Promise<EvaluationResult> {
  checkOptions('evaluate', opts);
  const op = 'evaluate';
  const V = reference.config.vocab;
  if (candidate.config.vocab !== V) throw new RangeError(`${op}: the models' vocabularies differ (${candidate.config.vocab} vs ${V})`);
  if ((opts.texts === undefined) === (opts.tokens === undefined)) throw new TypeError(`${op}: give texts or tokens (one of them)`);
  const seqs: number[][] = [];
  if (opts.texts !== undefined) {
    if (!Array.isArray(opts.texts) || opts.texts.some((t) => typeof t !== 'string')) throw new TypeError(`${op}: texts must be an array of strings`);
    for (const t of opts.texts) seqs.push(reference.tokenizer.encode(t));
  } else {
    if (!Array.isArray(opts.tokens)) throw new TypeError(`${op}: tokens must be an array of token id arrays`);
    for (const [i, s] of opts.tokens.entries()) {
      if (!Array.isArray(s)) throw new TypeError(`${op}: tokens[${i}] must be an array of token ids`);
      for (const id of s) if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`${op}: token id ${String(id)} in tokens[${i}] is outside [0, ${V})`);
      seqs.push([...s]);
    }
  }
  const maxCtx = Math.min(candidate.config.maxSeq, reference.config.maxSeq);
  const ctx = opts.contextLength ?? Math.min(256, maxCtx);
  if (!Number.isInteger(ctx) || ctx < 2 || ctx > maxCtx) throw new RangeError(`${op}: contextLength must be an integer in [2, ${maxCtx}]; got ${describe(opts.contextLength)}`);
  const windows: number[][] = [];
  for (const s of seqs) for (let i = 0; i + 1 < s.length; i += ctx) windows.push(s.slice(i, i + ctx));
  const scored = windows.reduce((a, w) => a + w.length - 1, 0);
  if (scored === 0) throw new RangeError(`${op}: no position to score (every sequence needs at least 2 tokens)`);

  const la = new Float64Array(V), lb = new Float64Array(V);
  const klds = new Float64Array(scored);
  let nllCand = 0, nllRef = 0, agree = 0, n = 0;
  for (const [wi, w] of windows.entries()) {
    opts.onProgress?.({ done: wi, total: windows.length });
    reference.reset();
    const ra = await reference.forwardAll(w);
    candidate.reset();  // (the same model may be both)
    const ca = await candidate.forwardAll(w);
    for (let t = 0; t + 1 < w.length; t++) {
      const ref = ra.subarray(t * V, (t + 1) * V), cand = ca.subarray(t * V, (t + 1) * V);
      logSoftmax(ref, la);
      logSoftmax(cand, lb);
      let d = 0;
      for (let i = 0; i < V; i++) {
        const p = Math.exp(la[i]!);
        if (p > 0) d += p * (la[i]! - lb[i]!);
      }
      klds[n] = Math.max(0, d);
      nllRef -= la[w[t + 1]!]!;
      nllCand -= lb[w[t + 1]!]!;
      if (argmax(ref) === argmax(cand)) agree++;
      n++;
    }
  }
  opts.onProgress?.({ done: windows.length, total: windows.length });
  reference.reset();
  candidate.reset();
  const meanKLD = klds.reduce((a, b) => a + b, 0) / n;
  const sorted = Float64Array.from(klds).sort();
  return {
    perplexity: Math.exp(nllCand / n), referencePerplexity: Math.exp(nllRef / n), meanKLD,
    kldPercentiles: { p50: pct(sorted, 50), p90: pct(sorted, 90), p99: pct(sorted, 99) },
    top1Agreement: agree / n, tokens: n, windows: windows.length,
  };
}
