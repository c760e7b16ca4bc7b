// pruneModel on the real stories260K checkpoint: calibration norms, exact
// per-layer sparsity, structured shrinking, and what pruning costs against the
// dense model (mean KL divergence and top-1 agreement, recorded).
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, pruneModel, saveModel, type Model } from '../lib/index';
import { planModel } from '../lib/model/model';
import { STORIES_MODEL as MODEL, STORIES_TOK as TOK, needStories } from './helpers';

const CALIBRATION = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.',
  'One day, a big dog found a red ball. The dog was very happy and ran to his friend.',
  'Tom and Sue went to the beach. They built a sand castle and saw a fish in the water.',
  'The little bird could not fly. Her mom said, "Be brave and try again." The bird flapped her wings.',
];

/** Mean KL(reference || candidate) and top-1 agreement over every position of the sequences. */
async function compare(ref: Model, cand: Model, seqs: number[][]): Promise<{ kl: number; top1: number; n: number }> {
  const V = ref.config.vocab;
  let kl = 0, agree = 0, n = 0;
  for (const s of seqs) {
    ref.reset();
    cand.reset();
    const a = await ref.forwardAll(s), b = await cand.forwardAll(s);
    for (let t = 0; t < s.length; t++) {
      const la = a.subarray(t * V, (t + 1) * V), lb = b.subarray(t * V, (t + 1) * V);
      const lse = (l: Float32Array) => { let m = -Infinity; for (const v of l) m = Math.max(m, v); let z = 0; for (const v of l) z += Math.exp(v - m); return m + Math.log(z); };
      const za = lse(la), zb = lse(lb);
      let d = 0, ia = 0, ib = 0;
      for (let i = 0; i < V; i++) {
        const pa = la[i]! - za;
        d += Math.exp(pa) * (pa - (lb[i]! - zb));
        if (la[i]! > la[ia]!) ia = i;
        if (lb[i]! > lb[ib]!) ib = i;
      }
      kl += d;
      agree += ia === ib ? 1 : 0;
      n++;
    }
  }
  return { kl: kl / n, top1: agree / n, n };
}

describe('pruneModel: stories260K', function () {
  this.timeout(300000);
  let dense: Model;
  let evalSeqs: number[][];
  let calib: number[][];

  before(async function () {
    needStories(this);
    dense = await loadModel(MODEL, { tokenizer: TOK });
    // evaluation text written by the dense model itself (sampled, seeded), prompts different from the calibration
    evalSeqs = [];
    for (const [i, prompt] of ['Once upon a time', 'The sun was', 'Ben had a'].entries()) {
      const ids = dense.tokenizer.encode(prompt);
      for await (const t of dense.generate(prompt, { maxTokens: 120, temperature: 1, seed: 7 + i })) ids.push(t.id);
      evalSeqs.push(ids);
    }
    // calibration: the hand-written sentences and more of the dense model's own text (other seeds)
    calib = CALIBRATION.map((t) => dense.tokenizer.encode(t));
    for (let i = 0; i < 8; i++) {
      const ids = dense.tokenizer.encode('Once upon a time');
      for await (const t of dense.generate(ids, { maxTokens: 120, temperature: 1, seed: 100 + i })) ids.push(t.id);
      calib.push(ids);
    }
  });
  after(() => dense?.dispose());

  it('calibration norms are the L2 norms of each linear input (checked at the first layer for one token)', async () => {
    const bos = dense.tokenizer.bos;
    const norms = (await dense._calibrate([[bos]])).norms;
    const c = dense.config;
    expect(norms.length).to.equal(c.layers * (3 * c.dim + c.hidden));
    const plan = await planModel(MODEL, { tokenizer: TOK });
    try {
      const read = (r: unknown, at: number, count: number) => {
        const { storage, offset } = r as { storage: { read(o: number, b: number): ArrayBuffer }; offset: number };
        return new Float32Array(storage.read(offset + at * 4, count * 4));
      };
      const e = read(plan.weights.embed, bos * c.dim, c.dim), g = read(plan.weights.layers[0]!.attnNorm, 0, c.dim);
      let ms = 0;
      for (const v of e) ms += v * v;
      const inv = 1 / Math.sqrt(ms / c.dim + c.normEps);
      // one token: the norm of a feature is |rmsnorm(x) * g|
      for (let i = 0; i < c.dim; i++) expect(norms[i]).to.be.closeTo(Math.abs(e[i]! * inv * g[i]!), 1e-5 * (1 + Math.abs(norms[i]!)));
      for (const v of norms) expect(Number.isFinite(v) && v >= 0).to.equal(true);
      // more tokens only add: the norms of two sequences are the root of the summed squares
      const n1 = (await dense._calibrate([dense.tokenizer.encode(CALIBRATION[0]!)])).norms;
      const n2 = (await dense._calibrate([dense.tokenizer.encode(CALIBRATION[1]!)])).norms;
      const both = (await dense._calibrate([dense.tokenizer.encode(CALIBRATION[0]!), dense.tokenizer.encode(CALIBRATION[1]!)])).norms;
      for (let i = 0; i < both.length; i += 37) expect(both[i]).to.be.closeTo(Math.hypot(n1[i]!, n2[i]!), 1e-9 + 1e-6 * both[i]!);
    } finally {
      plan.temp.forEach((t) => t.dispose());
    }
    expect(dense.length).to.equal(0);
  });

  it('Wanda 50%: every linear exactly half zero, still generates; KL and top-1 against the dense model recorded', async () => {
    const wanda = await pruneModel(dense, { method: 'wanda', sparsity: 0.5, calibration: calib });
    const mag = await pruneModel(dense, { method: 'magnitude', sparsity: 0.5 });
    try {
      const r = wanda.pruneReport!;
      expect(r.layers.length).to.equal(dense.config.layers * 7);
      for (const l of r.layers) {
        expect(l.sparsity, l.name).to.equal(0.5);  // rows of 64 and 172: half of each row
        expect(l.format).to.equal('bitmask');
      }
      expect(r.bytes).to.be.below(r.denseBytes);
      expect(r.bytesSaved).to.equal(r.denseBytes - r.bytes);
      let text = '';
      for await (const t of wanda.generate('Once upon a time', { maxTokens: 40 })) text += t.text;
      expect(text.length).to.be.above(20);
      const w = await compare(dense, wanda, evalSeqs), m = await compare(dense, mag, evalSeqs);
      console.log(`      stories260K 50% unstructured over ${w.n} positions: Wanda mean KL ${w.kl.toFixed(4)}, top-1 ${(100 * w.top1).toFixed(1)}%; magnitude mean KL ${m.kl.toFixed(4)}, top-1 ${(100 * m.top1).toFixed(1)}%`);
      // loose sanity bounds (the recorded numbers are the result; a 260K-parameter model has little
      // to spare): pruning costs something, not everything (a broken model is near log(512) = 6.2)
      expect(w.kl).to.be.above(0).and.below(3);
      expect(w.top1).to.be.above(0.25);
      expect(w.kl, 'Wanda keeps more of the model than magnitude at the same sparsity').to.be.below(m.kl);
    } finally {
      wanda.dispose();
      mag.dispose();
    }
  });

  it('global magnitude: exactly half of all pruned weights, spread unevenly over the layers', async () => {
    const g = await pruneModel(dense, { method: 'magnitude', sparsity: 0.5, granularity: 'global' });
    try {
      const r = g.pruneReport!;
      let zeros = 0, total = 0;
      for (const l of r.layers) {
        zeros += Math.round(l.sparsity * l.shape[0] * l.shape[1]);
        total += l.shape[0] * l.shape[1];
      }
      expect(zeros).to.equal(Math.round(0.5 * total));
      const s = r.layers.map((l) => l.sparsity);
      expect(Math.max(...s) - Math.min(...s)).to.be.above(0.05);  // one threshold, not one per layer
      let n = 0;
      for await (const _ of g.generate('Once upon a time', { maxTokens: 8 })) n++;
      expect(n).to.be.above(0);
      const cmp = await compare(dense, g, evalSeqs);
      console.log(`      stories260K magnitude 50% global: mean KL ${cmp.kl.toFixed(4)}, top-1 ${(100 * cmp.top1).toFixed(1)}%; per-linear sparsity ${Math.min(...s).toFixed(2)}..${Math.max(...s).toFixed(2)}`);
    } finally {
      g.dispose();
    }
  });

  it('2:4 and int8 values compose; structured pruning shrinks FFN channels and head groups', async () => {
    const nm = await pruneModel(dense, { pattern: '2:4', calibration: calib, weights: 'int8' });
    const ffn = await pruneModel(dense, { structured: { ffn: 0.25 }, calibration: calib });
    const heads = await pruneModel(dense, { structured: { heads: 0.25 }, calibration: calib });
    try {
      for (const l of nm.pruneReport!.layers) expect([l.format, l.sparsity]).to.deep.equal(['nm', 0.5]);
      expect(ffn.config.hidden).to.equal(dense.config.hidden - Math.round(0.25 * dense.config.hidden));
      expect(ffn.pruneReport!.hidden).to.deep.equal([dense.config.hidden, ffn.config.hidden]);
      expect([heads.config.heads, heads.config.kvHeads, heads.config.headDim]).to.deep.equal([6, 3, dense.config.headDim]);
      for (const [name, m] of [['2:4 int8', nm], ['ffn 25%', ffn], ['heads 25%', heads]] as const) {
        const r = await compare(dense, m, evalSeqs);
        console.log(`      stories260K ${name}: mean KL ${r.kl.toFixed(4)}, top-1 ${(100 * r.top1).toFixed(1)}%, ${m.pruneReport!.bytes} of ${m.pruneReport!.denseBytes} bytes`);
        expect(r.kl, name).to.be.above(0).and.below(4);
        let n = 0;
        for await (const _ of m.generate('Once upon a time', { maxTokens: 10 })) n++;
        expect(n, name).to.be.above(0);
      }
      // a structurally pruned model, pruned again unstructured, is refused (its weights are not the file's)
      let err: Error | undefined;
      try { await pruneModel(ffn, { sparsity: 0.5 }); } catch (e) { err = e as Error; }
      expect(err?.message).to.match(/must come from loadModel/);
    } finally {
      nm.dispose();
      ffn.dispose();
      heads.dispose();
    }
  });

  it('int4 values (2:4 and Wanda 50%): half zero, ~0.4 bytes per weight, close to the int8-valued model; saved and loaded back exactly', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-prune4-'));
    const models: Model[] = [];
    try {
      for (const o of [{ pattern: '2:4' as const }, { sparsity: 0.5 }]) {
        const p4 = await pruneModel(dense, { ...o, calibration: calib, weights: 'int4' });
        const p8 = await pruneModel(dense, { ...o, calibration: calib, weights: 'int8' });
        models.push(p4, p8);
        const name = o.pattern ?? 'unstructured 50%';
        for (const l of p4.pruneReport!.layers) {
          expect(l.format, l.name).to.equal(o.pattern ? 'nm' : 'bitmask');
          expect(l.sparsity, l.name).to.be.closeTo(0.5, 0.01);
          // 0.25 (values) + 0.125 (mask / indices, whole words / groups a row) + 2 / 64 (f16 scales) bytes per
          // weight, the bitmask's row pointers (8 bytes a row), the padding of vector loads past the end (64 bytes each)
          const [n, k] = l.shape;
          const pattern = o.pattern ? n * Math.ceil(Math.ceil(k / 4) * 2 * 2 / 8) + 64 : n * Math.ceil(k / 32) * 4 + 8 * (n + 1);
          const want = n * k / 4 + pattern + n * Math.ceil(k / 64) * 2 + 64;
          expect(l.bytes, l.name).to.be.within(want - 0.01 * n * k, want + 0.01 * n * k);
        }
        const r4 = await compare(dense, p4, evalSeqs), r8 = await compare(dense, p8, evalSeqs), r48 = await compare(p8, p4, evalSeqs);
        console.log(`      stories260K ${name} int4: mean KL ${r4.kl.toFixed(4)} (int8 values: ${r8.kl.toFixed(4)}; int4 vs int8 ${r48.kl.toFixed(4)}), ` +
          `top-1 ${(100 * r4.top1).toFixed(1)}%, ${p4.pruneReport!.bytes} bytes (int8 values: ${p8.pruneReport!.bytes})`);
        expect(r48.kl, name).to.be.above(0).and.below(0.75);
        expect(p4.pruneReport!.bytes).to.be.below(0.7 * p8.pruneReport!.bytes);  // 0.41 against 0.63 bytes per weight
        let n = 0;
        for await (const _ of p4.generate('Once upon a time', { maxTokens: 10 })) n++;
        expect(n, name).to.be.above(0);
        // save / load: the same logits, bit for bit
        const file = path.join(tmp, `p4-${models.length}.safetensors`);
        await saveModel(p4, file);
        const back = await loadModel(file, { tokenizer: TOK });
        models.push(back);
        p4.reset();
        const a = await p4.forwardAll(evalSeqs[0]!), b = await back.forwardAll(evalSeqs[0]!);
        expect(Buffer.from(b.buffer, b.byteOffset, b.byteLength).equals(Buffer.from(a.buffer, a.byteOffset, a.byteLength)), name).to.equal(true);
      }
    } finally {
      models.forEach((m) => m.dispose());
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('bad options give clear errors', async () => {
    const cases: [object, RegExp][] = [
      [{ method: 'wanda' }, /needs calibration/],
      [{ sparsity: 2 }, /sparsity must be in \[0, 1\]/],
      [{ pattern: '2:4', sparsity: 0.3 }, /fixes the sparsity/],
      [{ calibration: [] }, /non-empty array/],
      [{ structured: { ffn: 1 } }, /structured.ffn must be in \[0, 1\)/],
      [{ weights: 'int2' }, /weights must be 'f32', 'int8' or 'int4'/],
      [{ weights: 'int4', format: 'csr' }, /'int4' need the bitmask or nm format/],
      [{ weights: 'int4', groupSize: 48 }, /groupSize must be 32, 64 or 128/],
      [{ groupSize: 64 }, /groupSize applies to weights 'int4'/],
      [{ method: 'wanda', granularity: 'global', calibration: [[1, 2]] }, /applies to unstructured magnitude/],
      [{ calibration: [[1, 2, 99999]] }, /outside \[0, 512\)/],
    ];
    for (const [o, re] of cases) {
      let err: Error | undefined;
      try { await pruneModel(dense, o as never); } catch (e) { err = e as Error; }
      expect(err?.message, String(re)).to.match(re);
    }
  });
});
