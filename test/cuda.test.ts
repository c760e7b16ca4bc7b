// The CUDA backend. Without a GPU: the addon loads, reports what was compiled,
// and every way onto the device fails with an Error that says why. With a GPU:
// every CUDA op against the CPU path on fresh random data (same shapes and
// bounds as the CPU tests), the stories260K reference reproduced on the GPU,
// and device memory back at its starting level after dispose.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  KVCache, Tensor, attention, cudaMemory, info, linear, loadModel, matmulInt8, prune, quantize,
  add, rmsnorm, rope, softmax, swiglu, type Model,
} from '../lib/index';
import { randI8, randn, relErr, settled, STORIES_DIR as DIR, STORIES_MODEL as MODEL, STORIES_TOK as TOK, needStories } from './helpers';
import { writeRandomModel } from '../lib/model/synth';

const gpus = info().cuda.devices;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('cuda: without a device', function () {
  before(function () {
    if (gpus > 0) {
      console.log(`      (skipped: ${gpus} CUDA device(s) present; the GPU suite below runs instead)`);
      this.skip();
    }
  });

  it('the addon loads and reports what was compiled and why no device is used', () => {
    const c = info().cuda;
    expect(c.compiled).to.be.a('boolean');
    if (process.env.SPARQ_EXPECT_CUDA === '1') {
      expect(c.compiled, 'this build was made with nvcc').to.equal(true);
      expect(c.archs).to.include.members(['80']);
    }
    expect(c.devices).to.equal(0);
    expect(c.deviceList).to.deep.equal([]);
    expect(c.error).to.be.a('string').and.not.equal('');
    console.log(`      cuda: compiled=${c.compiled} archs=${c.archs.join(',')} runtime=${c.runtimeVersion} (${c.error})`);
  });

  it("Tensor.to('cuda') and every other way onto the GPU fail with an Error naming the reason", async () => {
    const t = Tensor.from([1, 2, 3, 4], [2, 2]);
    const reason = /no CUDA device available/;
    expect(() => t.to('cuda')).to.throw(Error, reason);
    expect(() => t.to('cuda:0')).to.throw(Error, reason);
    expect(() => Tensor.zeros([4], 'f32', 'cuda')).to.throw(Error, reason);
    expect(() => new KVCache({ layers: 1, kvHeads: 1, headDim: 8, maxSeq: 4, device: 'cuda' })).to.throw(Error, reason);
    const q = quantize(Tensor.rand([8, 32], { seed: 1 }));
    let err: unknown;
    try {
      await q.to('cuda');
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(reason);
    const sp = prune(Tensor.rand([8, 32], { seed: 2 }), { sparsity: 0.5 });
    err = undefined;
    try {
      await sp.to('cuda');
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(reason);
    expect(() => cudaMemory()).to.throw(Error, reason);
    // bad device names are a TypeError, not a crash
    expect(() => t.to('gpu' as 'cuda')).to.throw(TypeError, /device must be 'cpu' or 'cuda'/);
    // the tensor is untouched and still usable on the CPU
    expect(Array.from(t.to('cpu').toArray())).to.deep.equal([1, 2, 3, 4]);
    q.dispose();
    sp.dispose();
    t.dispose();
  });

  it("loadModel(..., { device: 'cuda' }) rejects with the reason and leaks nothing", async function () {
    needStories(this);
    const before = await settled(() => info().allocatedBytes);
    let err: unknown;
    try {
      await loadModel(MODEL, { tokenizer: TOK, device: 'cuda' });
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/toDevice\('cuda'\): no CUDA device available/);
    expect(await settled(() => info().allocatedBytes)).to.equal(before);
  });
});

describe('cuda: ops against the CPU (GPU present)', function () {
  this.timeout(300000);
  before(function () {
    if (gpus === 0) {
      console.log(`      (skipped: no CUDA device - ${info().cuda.error ?? 'none found'})`);
      this.skip();
    }
    const d = info().cuda.deviceList[0]!;
    console.log(`      device: ${d.name} sm_${d.major}${d.minor}, ${d.sms} SMs, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`);
  });

  it('to / from the device round-trips every dtype, and views read the right rows', () => {
    for (const dtype of ['f32', 'f16', 'bf16', 'i8', 'u8', 'i32'] as const) {
      const t = Tensor.rand([7, 13], { dtype, seed: 3 });
      const g = t.to('cuda');
      expect(g.device).to.equal('cuda');
      expect(g.dtype).to.equal(dtype);
      expect(Array.from(g.data())).to.deep.equal(Array.from(t.data()));
      expect(Array.from(g.slice(2, 5).data())).to.deep.equal(Array.from(t.slice(2, 5).data()));
      const back = g.to('cpu');
      expect(back.device).to.equal('cpu');
      expect(Array.from(back.data())).to.deep.equal(Array.from(t.data()));
      for (const x of [t, g, back]) x.dispose();
    }
  });

  it('operands on different devices are a TypeError naming both', async () => {
    const x = Tensor.rand([2, 16], { seed: 4 }), w = Tensor.rand([8, 16], { seed: 5 });
    const wg = w.to('cuda');
    let err: unknown;
    try {
      await linear(x, wg);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(TypeError);
    expect(String(err)).to.match(/same device.*'x' is on cpu, 'w' is on cuda/);
    for (const t of [x, w, wg]) t.dispose();
  });

  it('small ops match the CPU (awkward shapes)', async () => {
    for (const [rows, d] of [[1, 1], [3, 17], [5, 64], [2, 4099]] as const) {
      const x = Tensor.from(randn(rows * d), [rows, d]), x2 = Tensor.from(randn(rows * d), [rows, d]);
      const w = Tensor.from(randn(d), [d]);
      const xg = x.to('cuda'), x2g = x2.to('cuda'), wg = w.to('cuda');
      const pairs: [Promise<Tensor>, Promise<Tensor>, number][] = [
        [rmsnorm(x, w), rmsnorm(xg, wg), 1e-5],
        [softmax(x), softmax(xg), 1e-5],
        [swiglu(x, x2), swiglu(xg, x2g), 1e-5],
        [add(x, x2), add(xg, x2g), 0],
      ];
      if (d % 2 === 0) {
        pairs.push([rope(x.reshape([1, rows, d]), { offset: 5 }), rope(xg.reshape([1, rows, d]), { offset: 5 }), 1e-5]);
        pairs.push([rope(x.reshape([1, rows, d]), { layout: 'neox', offset: 1000 }), rope(xg.reshape([1, rows, d]), { layout: 'neox', offset: 1000 }), 1e-5]);
      }
      for (const [pc, pg, tol] of pairs) {
        const c = await pc, g = await pg;
        expect(g.device).to.equal('cuda');
        expect(relErr(g.toArray(), c.toArray()), `[${rows}, ${d}]`).to.be.at.most(tol);
        c.dispose();
        g.dispose();
      }
      for (const t of [x, x2, w, xg, x2g, wg]) t.dispose();
    }
  });

  it('matmulInt8 is exact (tensor cores for m > 8, dp4a for m <= 8)', async () => {
    for (const [m, n, k] of [[1, 1, 1], [1, 31, 100], [7, 33, 64], [8, 129, 257], [9, 17, 31], [130, 131, 200], [257, 64, 1000]] as const) {
      const a = Tensor.from(randI8(m * k), [m, k]), b = Tensor.from(randI8(n * k), [n, k]);
      const ag = a.to('cuda'), bg = b.to('cuda');
      const c = await matmulInt8(a, b), g = await matmulInt8(ag, bg);
      expect(g.dtype).to.equal('i32');
      expect(Array.from(g.toArray()), `m=${m} n=${n} k=${k}`).to.deep.equal(Array.from(c.toArray()));
      for (const t of [a, b, ag, bg, c, g]) t.dispose();
    }
  });

  it('linear: f32, int8 per channel / per group, static scale and bias match the CPU', async () => {
    for (const [m, n, k] of [[1, 64, 64], [3, 37, 100], [8, 128, 320], [9, 65, 96], [100, 257, 512]] as const) {
      const x = Tensor.from(randn(m * k), [m, k]), w = Tensor.from(randn(n * k, 0.05), [n, k]), bias = Tensor.from(randn(n), [n]);
      const xg = x.to('cuda'), wg = w.to('cuda'), bg = bias.to('cuda');
      const cf = await linear(x, w, bias), gf = await linear(xg, wg, bg);
      expect(relErr(gf.toArray(), cf.toArray()), `f32 ${m}x${n}x${k}`).to.be.below(1e-5);
      for (const groupSize of [undefined, 32, 64, 128]) {
        const q = quantize(w, groupSize ? { granularity: 'per-group', groupSize } : {});
        const qg = await q.to('cuda');
        const c = await linear(x, q, bias), g = await linear(xg, qg, bg);
        // same int8 activations and exact int32 sums; only the f32 epilogue order differs
        expect(maxDiff(g.toArray(), c.toArray()), `int8 g=${groupSize ?? 'channel'} ${m}x${n}x${k}`).to.be.at.most(1e-5 * maxAbs(c.toArray()) + 1e-6);
        const qs = await q.to('cuda', { inputScale: 0.02 });
        const cs = await linear(x, q, bias, { inputScale: 0.02 }), gs = await linear(xg, qs, bg);
        expect(maxDiff(gs.toArray(), cs.toArray())).to.be.at.most(1e-5 * maxAbs(cs.toArray()) + 1e-6);
        for (const t of [c, g, cs, gs]) t.dispose();
        for (const t of [q, qg, qs]) t.dispose();
      }
      for (const t of [x, w, bias, xg, wg, bg, cf, gf]) t.dispose();
    }
  });

  it('sparse linear (csr, bitmask, 2:4; f32 and int8 values) matches the dense product of its values', async () => {
    const m = 5, n = 67, k = 130;
    const x = Tensor.from(randn(m * k), [m, k]), w = Tensor.from(randn(n * k), [n, k]);
    const xg = x.to('cuda');
    for (const opts of [{ sparsity: 0.7, format: 'csr' }, { sparsity: 0.5, format: 'bitmask' }, { pattern: '2:4' }] as const) {
      for (const int8 of [false, true]) {
        let sp = prune(w, opts as Parameters<typeof prune>[1]);
        if (int8) sp = quantize(sp);
        const dense = await sp.toDense();
        const ref = await linear(x, dense);  // f32 activations times the stored values
        const spg = await sp.to('cuda');
        const g = await linear(xg, spg);
        expect(relErr(g.toArray(), ref.toArray()), `${JSON.stringify(opts)} int8=${int8}`).to.be.below(1e-5);
        for (const t of [sp, dense, ref, spg, g]) t.dispose();
      }
    }
    for (const t of [x, w, xg]) t.dispose();
  });

  it('attention: prefill (causal, GQA, mask), f16 / bf16 inputs, and split-KV decode match the CPU', async () => {
    const cases = [
      { b: 1, hq: 4, hkv: 4, tq: 7, tk: 7, d: 16, causal: true },
      { b: 2, hq: 8, hkv: 2, tq: 33, tk: 40, d: 64, causal: true },
      { b: 1, hq: 6, hkv: 3, tq: 1, tk: 3000, d: 128, causal: true },  // decode: split across blocks
      { b: 1, hq: 2, hkv: 1, tq: 5, tk: 9, d: 256, causal: false },
    ];
    for (const c of cases) {
      const q = Tensor.from(randn(c.b * c.hq * c.tq * c.d), [c.b, c.hq, c.tq, c.d]);
      const k = Tensor.from(randn(c.b * c.hkv * c.tk * c.d), [c.b, c.hkv, c.tk, c.d]);
      const v = Tensor.from(randn(c.b * c.hkv * c.tk * c.d), [c.b, c.hkv, c.tk, c.d]);
      const ref = await attention(q, k, v, { causal: c.causal });
      const [qg, kg, vg] = [q.to('cuda'), k.to('cuda'), v.to('cuda')];
      const g = await attention(qg, kg, vg, { causal: c.causal });
      expect(relErr(g.toArray(), ref.toArray()), JSON.stringify(c)).to.be.below(1e-4);
      for (const dt of ['f16', 'bf16'] as const) {
        const [qh, kh, vh] = [qg.cast(dt), kg.cast(dt), vg.cast(dt)];
        const h = await attention(qh, kh, vh, { causal: c.causal });
        expect(h.dtype).to.equal(dt);
        expect(relErr(h.toArray(), ref.toArray()), `${dt} ${JSON.stringify(c)}`).to.be.below(dt === 'f16' ? 5e-3 : 3e-2);
        for (const t of [qh, kh, vh, h]) t.dispose();
      }
      for (const t of [q, k, v, ref, qg, kg, vg, g]) t.dispose();
    }
    // additive mask, broadcast over batch and heads
    const q = Tensor.from(randn(2 * 4 * 6 * 32), [2, 4, 6, 32]), k = Tensor.from(randn(2 * 2 * 6 * 32), [2, 2, 6, 32]);
    const mask = Tensor.from(Float32Array.from({ length: 36 }, (_, i) => (i % 5 === 0 ? -Infinity : (i % 7) * 0.1)), [6, 6]);
    const ref = await attention(q, k, k, { mask });
    const g = await attention(q.to('cuda'), k.to('cuda'), k.to('cuda'), { mask: mask.to('cuda') });
    expect(relErr(g.toArray(), ref.toArray())).to.be.below(1e-4);
  });

  it('a KV cache on the GPU (f32, f16, int8) gives the CPU cache results', async () => {
    for (const dtype of ['f32', 'f16', 'i8'] as const) {
      const opts = { layers: 1, kvHeads: 2, headDim: 64, maxSeq: 600, dtype };
      const cc = new KVCache(opts), cg = new KVCache({ ...opts, device: 'cuda' });
      for (const t of [300, 1, 200]) {
        const k = Tensor.from(randn(2 * t * 64), [1, 2, t, 64]), v = Tensor.from(randn(2 * t * 64), [1, 2, t, 64]);
        await cc.append(0, k, v);
        await cg.append(0, k.to('cuda'), v.to('cuda'));
        const q = Tensor.from(randn(4 * t * 64), [1, 4, t, 64]);
        const a = await attention(q, cc.view(0), null, { causal: true });
        const b = await attention(q.to('cuda'), cg.view(0), null, { causal: true });
        expect(relErr(b.toArray(), a.toArray()), `${dtype} t=${t}`).to.be.below(dtype === 'f32' ? 1e-4 : 1e-3);
      }
      cc.dispose();
      cg.dispose();
    }
  });

  it('device memory returns to its starting level after dispose', async () => {
    const start = await settled(() => cudaMemory().allocated);
    for (let i = 0; i < 50; i++) {
      const t = Tensor.rand([256, 256], { seed: i }).to('cuda');
      const q = await quantize(Tensor.rand([64, 256], { seed: i })).to('cuda');
      const y = await linear(t, q);
      for (const x of [t, q, y]) x.dispose();
    }
    expect(await settled(() => cudaMemory().allocated)).to.equal(start);
  });
});

describe('cuda: stories260K on the GPU', function () {
  this.timeout(300000);
  let ref: { entries: { prompt: string; prompt_token_ids: number[]; generated_token_ids: number[]; n_generated: number }[]; logits: { pos0_after_BOS: number[] } };
  before(function () {
    if (gpus === 0) {
      console.log('      (skipped: no CUDA device)');
      this.skip();
    }
    needStories(this);
    ref = JSON.parse(fs.readFileSync(path.join(DIR, 'reference.json'), 'utf8')) as typeof ref;
  });

  async function ids(m: Model, prompt: number[], n: number): Promise<number[]> {
    const out: number[] = [];
    for await (const t of m.generate(prompt, { maxTokens: n, temperature: 0 })) out.push(t.id);
    return out;
  }

  it('reproduces the run.c logits and greedy ids (f32), int8 agrees with the CPU int8 model', async () => {
    const start = await settled(() => cudaMemory().allocated);
    const g = await loadModel(MODEL, { tokenizer: TOK, device: 'cuda' });
    expect(g.device).to.equal('cuda');
    expect(g.deviceBytes).to.be.above(0);
    const logits = await g.forward([1]);
    expect(maxDiff(logits, ref.logits.pos0_after_BOS)).to.be.below(1e-4);
    for (const e of ref.entries) expect(await ids(g, e.prompt_token_ids, e.n_generated), e.prompt).to.deep.equal(e.generated_token_ids);
    g.dispose();
    for (const kvCache of ['f32', 'f16', 'i8'] as const) {
      const c = await loadModel(MODEL, { tokenizer: TOK, weights: 'int8', kvCache });
      const gi = await loadModel(MODEL, { tokenizer: TOK, weights: 'int8', kvCache, device: 'cuda' });
      const e = ref.entries[0]!;
      const lc = await c.forwardAll(e.prompt_token_ids), lg = await gi.forwardAll(e.prompt_token_ids);
      expect(maxDiff(lg, lc), kvCache).to.be.below(1e-3 * maxAbs(lc));
      c.dispose();
      gi.dispose();
    }
    expect(await settled(() => cudaMemory().allocated)).to.equal(start);
  });
});

describe('cuda: Qwen2 biases, Qwen3 q / k norms and Llama 3.1 rope factors on the GPU', function () {
  this.timeout(300000);
  let dir = '';
  before(function () {
    if (gpus === 0) {
      console.log('      (skipped: no CUDA device)');
      this.skip();
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-cuda-archs-'));
  });
  after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  const base = { dim: 64, hidden: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 512, maxSeq: 128 };
  for (const [name, cfg] of [
    ['qwen2', { ...base, arch: 'qwen2' as const }], ['qwen3', { ...base, arch: 'qwen3' as const, headDim: 32 }], ['llama3 rope scaling', { ...base, ropeScaling: 'llama3' as const }],
  ] as const) {
    it(`${name}: logits on the GPU match the CPU's (f32 and int8 weights)`, async () => {
      const file = writeRandomModel(path.join(dir, name.replace(/ /g, '-')), cfg, ['gguf-f32'])['gguf-f32']!;
      const ids = Array.from({ length: 40 }, (_, i) => 3 + ((i * 37) % 500));
      for (const weights of ['f32', 'int8'] as const) {
        const c = await loadModel(file, { weights }), g = await loadModel(file, { weights, device: 'cuda' });
        try {
          expect(relErr(await g.forwardAll(ids), await c.forwardAll(ids)), `${name} ${weights}`).to.be.lessThan(weights === 'f32' ? 1e-4 : 2e-2);
        } finally {
          c.dispose();
          g.dispose();
        }
      }
    });
  }
});
