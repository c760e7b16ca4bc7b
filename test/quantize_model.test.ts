// quantizeModel on stories260K: the default reproduces loadModel(weights: 'int8'),
// calibration statistics are consistent, and every method's accuracy cost against
// the f32 model is measured (evaluation text the f32 model wrote itself).
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tensor, evaluate, loadModel, quantize, quantizeModel, type Model, type QuantizeModelOptions } from '../lib/index';
import { loadNative } from '../lib/native';
import { randn, STORIES_MODEL as MODEL, STORIES_TOK as TOK, needStories } from './helpers';

async function sample(m: Model, n: number, seed: number): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < n; i++) {
    const ids = [m.tokenizer.bos];
    for await (const t of m.generate(ids.slice(), { maxTokens: 250, temperature: 1, seed: seed + i })) ids.push(t.id);
    out.push(ids);
  }
  return out;
}

describe('quantizeModel: stories260K', function () {
  this.timeout(300000);
  let f32: Model;
  let evalTokens: number[][], calib: number[][];

  before(async function () {
    needStories(this);
    // an f32 KV cache: what is measured is the weights' quantization, not the cache's rounding
    f32 = await loadModel(MODEL, { tokenizer: TOK, kvCache: 'f32' });
    evalTokens = await sample(f32, 8, 1000);
    calib = await sample(f32, 8, 5000);  // other text than the evaluation's
  });
  after(() => f32?.dispose());

  it('the default (int8 per channel, dynamic activations) gives the logits of loadModel(weights: int8)', async () => {
    const a = await quantizeModel(f32);
    const b = await loadModel(MODEL, { tokenizer: TOK, weights: 'int8', kvCache: 'f32' });
    try {
      const la = await a.forwardAll(evalTokens[0]!.slice(0, 64)), lb = await b.forwardAll(evalTokens[0]!.slice(0, 64));
      expect(Array.from(la)).to.deep.equal(Array.from(lb));
      const r = a.quantizeReport!;
      expect(r.layers.map((l) => l.name)).to.include.members(['layers.0.wqkv', 'layers.0.wo', 'layers.0.w13', 'layers.0.w2', 'output']);
      expect(r.bytes / r.f32Bytes).to.be.within(0.25, 0.3);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('calibration records per-input ranges and histograms that count every value', async () => {
    const seqs = calib.slice(0, 2);
    const c = f32.config, tokens = seqs.reduce((a, s) => a + s.length, 0);
    const first = await f32._calibrate(seqs);
    const ranges = new Float32Array(c.layers * 8);
    for (let i = 0; i < c.layers * 4; i++) { ranges[2 * i] = Math.min(first.lo[i]!, 0); ranges[2 * i + 1] = Math.max(first.hi[i]!, 0); }
    const st = await f32._calibrate(seqs, { ranges, bins: 64 });
    const width = [c.dim, c.heads * c.headDim, c.dim, c.hidden];
    for (let i = 0; i < c.layers * 4; i++) {
      expect(st.hist!.subarray(i * 64, (i + 1) * 64).reduce((a, b) => a + b, 0)).to.equal(tokens * width[i % 4]!);
      expect(st.lo[i]).to.equal(first.lo[i]);
      // max |x| per feature agrees with the per-input range
      const stride = 2 * c.dim + c.heads * c.headDim + c.hidden, at = Math.floor(i / 4) * stride + [0, c.dim, c.dim + c.heads * c.headDim, 2 * c.dim + c.heads * c.headDim][i % 4]!;
      let amax = 0;
      for (let j = 0; j < width[i % 4]!; j++) amax = Math.max(amax, st.amax[at + j]!);
      expect(amax).to.equal(Math.max(-st.lo[i]!, st.hi[i]!));
    }
  });

  it('every method measured against f32 (KLD, top-1 agreement); W8A8 within the Q8_0-class bound', async () => {
    const runs: [string, QuantizeModelOptions][] = [
      ['int8 per channel, dynamic activations', {}],
      ['int8 group 32, dynamic', { weights: { granularity: { groupSize: 32 } } }],
      ['int8 per channel, classifier kept f32', { keepFloat: ['output'] }],
      ['static activations, minmax', { activations: { static: 'per-tensor', observer: 'minmax' }, calibration: calib }],
      ['static activations, percentile 99.99', { activations: { static: 'per-tensor', observer: 'percentile' }, calibration: calib }],
      ['static activations, mse', { activations: { static: 'per-tensor', observer: 'mse' }, calibration: calib }],
      ['SmoothQuant 0.25, dynamic', { smoothQuant: { alpha: 0.25 }, calibration: calib }],
      ['SmoothQuant 0.5, dynamic', { smoothQuant: { alpha: 0.5 }, calibration: calib }],
      ['SmoothQuant 0.75, dynamic', { smoothQuant: { alpha: 0.75 }, calibration: calib }],
      ['SmoothQuant 0.5, static mse', { smoothQuant: { alpha: 0.5 }, activations: { static: 'per-tensor', observer: 'mse' }, calibration: calib }],
    ];
    const kld: Record<string, number> = {};
    for (const [name, o] of runs) {
      const q = await quantizeModel(f32, o);
      try {
        const r = await evaluate(q, f32, { tokens: evalTokens });
        kld[name] = r.meanKLD;
        console.log(`      ${name.padEnd(40)} mean KLD ${r.meanKLD.toExponential(3)}  p99 ${r.kldPercentiles.p99.toExponential(2)}  top-1 ${(100 * r.top1Agreement).toFixed(2)}%  PPL ${r.perplexity.toFixed(4)} (f32 ${r.referencePerplexity.toFixed(4)})  ${(q.quantizeReport!.bytes / 1024).toFixed(0)} KiB`);
        // measured, not ranked: each is a working model, far from a broken one (log 512 = 6.2)
        expect(r.meanKLD, name).to.be.above(0).and.below(0.05);
        if (name === runs[0]![0]) {
          expect(r.meanKLD).to.be.at.most(2e-3);
          expect(r.top1Agreement).to.be.at.least(0.98);
        }
      } finally {
        q.dispose();
      }
    }
    // keeping the classifier in f32 removes its share of the error
    expect(kld['int8 per channel, classifier kept f32']).to.be.below(kld['int8 per channel, dynamic activations']!);
  });

  /** quantizes with each option set, prints and returns the mean KLDs; GPTQ runs must lower the reconstruction error of every linear */
  async function gptqRuns(runs: [string, QuantizeModelOptions][]): Promise<Record<string, number>> {
    const res: Record<string, number> = {};
    for (const [name, o] of runs) {
      const q = await quantizeModel(f32, o);
      try {
        const r = await evaluate(q, f32, { tokens: evalTokens });
        res[name] = r.meanKLD;
        const g = q.quantizeReport!.gptq;
        console.log(`      ${name.padEnd(26)} mean KLD ${r.meanKLD.toExponential(3)}  top-1 ${(100 * r.top1Agreement).toFixed(2)}%  PPL ${r.perplexity.toFixed(4)}  ` +
          `${(q.quantizeReport!.bytes / 1024).toFixed(0)} KiB` + (g ? `  reconstruction error ${g.error.toFixed(1)} (round-to-nearest ${g.rtnError.toFixed(1)})` : ''));
        expect(r.meanKLD, name).to.be.above(0).and.below(1);
        if (g) {
          expect(g.error).to.be.below(g.rtnError);
          // per linear (the classifier is round-to-nearest: its input is not recorded)
          for (const l of q.quantizeReport!.layers.filter((x) => x.gptqError !== undefined)) expect(l.gptqError!, l.name).to.be.at.most(l.rtnError!);
        }
      } finally {
        q.dispose();
      }
    }
    return res;
  }

  it('GPTQ int8: lower reconstruction error than round-to-nearest on every linear, lower KLD with groups of 32', async () => {
    const res = await gptqRuns([
      ['int8 RTN per channel', {}], ['int8 GPTQ per channel', { gptq: {}, calibration: calib }],
      ['int8 RTN group 32', { weights: { granularity: { groupSize: 32 } } }], ['int8 GPTQ group 32', { weights: { granularity: { groupSize: 32 } }, gptq: {}, calibration: calib }],
    ]);
    expect(res['int8 GPTQ group 32']).to.be.below(res['int8 RTN group 32']!);
  });

  it('int4 with groups of 32 (rows of 64 and 172: a partial last group): GPTQ has lower KLD than round-to-nearest', async () => {
    const res = await gptqRuns([
      ['int4 g32 round-to-nearest', { weights: { bits: 4, granularity: { groupSize: 32 } } }],
      ['int4 g32 GPTQ', { weights: { bits: 4, granularity: { groupSize: 32 } }, gptq: {}, calibration: calib }],
    ]);
    expect(res['int4 g32 GPTQ']).to.be.below(res['int4 g32 round-to-nearest']!);
  });

  it('GPTQ with uncorrelated inputs (H = c I) is round-to-nearest; with correlated ones it beats it', async () => {
    const nat = loadNative();
    const [n, k] = [7, 45];
    const w = Tensor.from(randn(n * k), [n, k]);
    const eye = new Float64Array(k * k);
    for (let i = 0; i < k; i++) eye[i * k + i] = 3;
    for (const group of [0, 32]) {
      const g = await nat.gptq(w._storage, w._offset, n, k, eye, 8, group, 0.01);
      const out = Tensor._alloc([n, k], 'f32');
      nat.dequantize(g.packed!, out._storage, out._offset, true);
      const rtn = quantize(w, group ? { granularity: 'per-group', groupSize: group } : {}).dequantize();
      // the same grid; GPTQ rounds in f64, round-to-nearest in f32, so a value at a rounding tie may land one step apart
      const o = out.toArray(), r = rtn.toArray();
      let diff = 0;
      for (let i = 0; i < o.length; i++) if (Math.abs(o[i]! - r[i]!) > 1e-6 * Math.abs(r[i]!)) diff++;
      expect(diff, `group ${group}`).to.be.at.most(1);
      expect(g.error).to.be.closeTo(g.rtnError, 1e-5 * g.rtnError);  // (its scales are f32-rounded)
      g.packed!.dispose();
    }
    // H from correlated inputs: x = z + 0.9 * shift(z)
    const t = 400, x = new Float64Array(t * k), z = randn(t * (k + 1));
    for (let r = 0; r < t; r++) for (let c = 0; c < k; c++) x[r * k + c] = z[r * (k + 1) + c]! + 0.9 * z[r * (k + 1) + c + 1]!;
    const h = new Float64Array(k * k);
    for (let r = 0; r < t; r++) for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) h[a * k + b] += x[r * k + a]! * x[r * k + b]!;
    const g = await nat.gptq(w._storage, w._offset, n, k, h, 8, 0, 0.01);
    expect(g.error).to.be.below(0.9 * g.rtnError);
    g.packed!.dispose();
    // layouts the result cannot be packed into are refused up front (a 4-bit group of 0 once divided by zero)
    for (const [bits, group] of [[4, 0], [4, 48], [8, 12]] as const) {
      let err: Error | undefined;
      try { await nat.gptq(w._storage, w._offset, n, k, h, bits, group, 0.01); } catch (e) { err = e as Error; }
      expect(err?.message, `${bits} bits, group ${group}`).to.match(/is not a layout/);
    }
    // calibration histogram ranges must be finite
    const ranges = new Float32Array(f32.config.layers * 8).fill(1);
    ranges[3] = NaN;
    let err: Error | undefined;
    try { await f32._calibrate([[1, 2, 3]], { ranges, bins: 16 }); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/finite with lo <= hi/);
    w.dispose();
  });

  it('bad options give clear errors', async () => {
    const cases: [object, RegExp][] = [
      [{ gptq: { blockSize: 128 } }, /gptq need calibration/],
      [{ gptq: { dampening: 2 }, calibration: [[1, 2]] }, /dampening must be in \[0, 1\)/],
      [{ weights: { bits: 3 } }, /bits must be 8 or 4/],
      [{ weights: { bits: 4, granularity: 'per-channel' } }, /take a group size/],
      [{ weights: { bits: 4 }, activations: { static: 'per-tensor' }, calibration: [[1, 2]] }, /dynamic activations only/],
      [{ weights: { granularity: { groupSize: 20 } } }, /groupSize: 32 \| 64 \| 128/],
      [{ activations: { static: 'per-tensor' } }, /need calibration/],
      [{ smoothQuant: { alpha: 2 }, calibration: [[1, 2]] }, /alpha must be in \[0, 1\]/],
      [{ keepFloat: ['layers.99'] }, /names no linear/],
      [{ activations: 'per-row' }, /activations must be/],
    ];
    for (const [o, re] of cases) {
      let err: Error | undefined;
      try { await quantizeModel(f32, o as never); } catch (e) { err = e as Error; }
      expect(err?.message, String(re)).to.match(re);
    }
  });
});
