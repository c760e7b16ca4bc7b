// Stress: 1,000 concurrent mixed async ops (int8 GEMM, f32 linear, attention,
// and generate on two models) all give the results they give one at a time;
// two worker threads generate at once correctly; repeated load / generate /
// dispose keeps RSS flat; absurd sizes and ids are refused before allocating.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { KVCache, Tensor, attention, info, linear, loadModel, matmulInt8, quantize, type Model } from '../lib/index';
import { ROOT, randI8, randn, STORIES_MODEL as MODEL, STORIES_TOK as TOK, haveStories as have, needStories } from './helpers';

async function greedy(m: Model, prompt: string, n: number): Promise<number[]> {
  const ids: number[] = [];
  for await (const t of m.generate(prompt, { maxTokens: n, temperature: 0 })) ids.push(t.id);
  return ids;
}

describe('stress', function () {
  this.timeout(600000);

  it('1,000 concurrent mixed ops (GEMM, linear, attention, generate on two models) match their one-at-a-time results', async function () {
    needStories(this);
    const f32 = await loadModel(MODEL, { tokenizer: TOK });
    const int8 = await loadModel(MODEL, { tokenizer: TOK, weights: 'int8' });
    // inputs, and what each op gives alone
    const A = Array.from({ length: 8 }, (_, i) => Tensor.from(randI8((i + 1) * 70), [i + 1, 70]));
    const B = Tensor.from(randI8(33 * 70), [33, 70]);
    const X = Array.from({ length: 8 }, (_, i) => Tensor.from(randn((i * 5 + 1) * 96), [i * 5 + 1, 96]));
    const W = quantize(Tensor.from(randn(40 * 96, 0.1), [40, 96]));
    const Wf = Tensor.from(randn(24 * 96, 0.1), [24, 96]);
    const Q = Tensor.from(randn(2 * 4 * 9 * 32), [2, 4, 9, 32]), K = Tensor.from(randn(2 * 2 * 13 * 32), [2, 2, 13, 32]);
    const prompts = ['Once upon a time', 'The cat', 'Lily and Ben'];
    const alone = {
      gemm: await Promise.all(A.map(async (a) => (await matmulInt8(a, B)).toArray())),
      lin: await Promise.all(X.map(async (x) => (await linear(x, W)).toArray())),
      linf: await Promise.all(X.map(async (x) => (await linear(x, Wf)).toArray())),
      att: (await attention(Q, K, K, { causal: true })).toArray(),
      gen: { f32: [] as number[][], int8: [] as number[][] },
    };
    for (const p of prompts) {
      alone.gen.f32.push(await greedy(f32, p, 24));
      alone.gen.int8.push(await greedy(int8, p, 24));
    }
    const before = info().allocatedBytes;
    const jobs: Promise<void>[] = [];
    let mismatches = 0;
    const same = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      if (a.length !== b.length) return false;
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
      return true;
    };
    for (let i = 0; i < 1000; i++) {
      const kind = i % 20;
      if (kind < 8) {
        const j = i % A.length;
        jobs.push(matmulInt8(A[j]!, B).then((c) => { if (!same(c.toArray(), alone.gemm[j]!)) mismatches++; c.dispose(); }));
      } else if (kind < 12) {
        const j = i % X.length;
        jobs.push(linear(X[j]!, W).then((y) => { if (!same(y.toArray(), alone.lin[j]!)) mismatches++; y.dispose(); }));
      } else if (kind < 15) {
        const j = i % X.length;
        jobs.push(linear(X[j]!, Wf).then((y) => { if (!same(y.toArray(), alone.linf[j]!)) mismatches++; y.dispose(); }));
      } else if (kind < 19) {
        jobs.push(attention(Q, K, K, { causal: true }).then((o) => { if (!same(o.toArray(), alone.att)) mismatches++; o.dispose(); }));
      } else {
        // generate calls on one model queue up behind each other; both models run at once
        const m = i % 40 === 19 ? 'f32' : 'int8';
        const p = (i >> 1) % prompts.length;
        jobs.push(greedy(m === 'f32' ? f32 : int8, prompts[p]!, 24).then((ids) => { if (!same(ids, alone.gen[m][p]!)) mismatches++; }));
      }
    }
    const t0 = Date.now();
    await Promise.all(jobs);
    console.log(`      1,000 ops in ${Date.now() - t0} ms, ${mismatches} mismatches`);
    expect(mismatches).to.equal(0);
    // every output was disposed (results of the one-at-a-time runs may be finalized meanwhile)
    expect(info().allocatedBytes).to.be.at.most(before);
    for (const t of [...A, B, ...X, Wf, Q, K]) t.dispose();
    W.dispose();
    f32.dispose();
    int8.dispose();
  });

  it('two worker threads generate at once, each the main thread\'s greedy ids', async function () {
    const dist = path.join(ROOT, 'dist', 'index.js');
    needStories(this);
    if (!fs.existsSync(dist)) {
      console.log('      (skipped: needs the compiled dist/)');
      this.skip();
    }
    const main = await loadModel(MODEL, { tokenizer: TOK });
    const ref = await greedy(main, 'Once upon a time', 48);
    main.dispose();
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const sparq = require(workerData.dist);
      (async () => {
        const m = await sparq.loadModel(workerData.model, { tokenizer: workerData.tok, weights: workerData.weights });
        const ids = [];
        for await (const t of m.generate('Once upon a time', { maxTokens: 48, temperature: 0 })) ids.push(t.id);
        m.dispose();
        parentPort.postMessage({ ids });
      })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));`;
    const run = (weights: string) => new Promise<number[]>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { dist, model: MODEL, tok: TOK, weights } });
      w.once('message', (m: { ids?: number[]; error?: string }) => (m.error ? reject(new Error(m.error)) : resolve(m.ids!)));
      w.once('error', reject);
    });
    const [a, b] = await Promise.all([run('f32'), run('f32')]);
    expect(a).to.deep.equal(ref);
    expect(b).to.deep.equal(ref);
  });

  it('worker threads terminated while their ops run (matmul, linear, softmax, generate) leave the process alive', function () {
    const dist = path.join(ROOT, 'dist', 'index.js');
    needStories(this);
    if (!fs.existsSync(dist)) {
      console.log('      (skipped: needs the compiled dist/)');
      this.skip();
    }
    // in a child process: settling a promise in a dying env used to abort the whole process
    const code = `
      const { Worker } = require('node:worker_threads');
      const body = \`const S = require(${JSON.stringify(dist)}); const { parentPort } = require('node:worker_threads');
        const a = S.Tensor.zeros([768, 768]); parentPort.postMessage('start');
        S.matmul(a, a); S.linear(a, a); (async () => { for (;;) await S.softmax(a); })();
        S.loadModel(${JSON.stringify(MODEL)}, { tokenizer: ${JSON.stringify(TOK)} }).then(async (m) => { for await (const t of m.generate('Once', { maxTokens: 400 })) {} });\`;
      (async () => {
        for (let i = 0; i < 12; i++) {
          const w = new Worker(body, { eval: true });
          await new Promise((r) => w.once('message', r));
          await new Promise((r) => setTimeout(r, i * 6));
          await w.terminate();
        }
        console.log('alive');
      })();`;
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 120000 });
    expect(r.stderr).to.not.match(/terminate called|Aborted/);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('alive');
  });

  it('100 load / generate / dispose cycles keep RSS flat (< 24 MiB growth after warm-up) and native memory exact', async function () {
    needStories(this);
    const cycle = async (i: number) => {
      const m = await loadModel(MODEL, { tokenizer: TOK, weights: i % 2 ? 'int8' : 'f32', kvCache: i % 3 ? 'f32' : 'i8' });
      await greedy(m, 'Once upon a time', 16);
      m.dispose();
    };
    for (let i = 0; i < 10; i++) await cycle(i);
    global.gc?.();
    const base = info().allocatedBytes, rss0 = process.memoryUsage.rss();
    for (let i = 0; i < 100; i++) await cycle(i);
    global.gc?.();
    const growth = (process.memoryUsage.rss() - rss0) / 2 ** 20;
    console.log(`      RSS growth over 100 cycles: ${growth.toFixed(1)} MiB`);
    expect(info().allocatedBytes).to.be.at.most(base);
    if (process.env.SPARQ_ASAN !== '1') expect(growth).to.be.below(24);  // ASan's quarantine holds freed memory
  });

  it('absurd sizes, token ids past the vocab and impossible caches are refused before anything is allocated', async function () {
    const before = info().allocatedBytes;
    expect(() => Tensor.zeros([2 ** 21, 2 ** 21])).to.throw(RangeError);           // 2^42 elements
    expect(() => Tensor.zeros([2 ** 20, 2 ** 19])).to.throw(RangeError);           // 2 TiB: over physical memory
    expect(() => Tensor.zeros([-1, 4])).to.throw(RangeError);
    expect(() => new KVCache({ layers: 4096, kvHeads: 4096, headDim: 65536, maxSeq: 2 ** 24 })).to.throw(RangeError);
    expect(() => new KVCache({ layers: 1, kvHeads: 1, headDim: 8, maxSeq: 2 ** 25 })).to.throw(RangeError);
    if (have) {
      const m = await loadModel(MODEL, { tokenizer: TOK });
      for (const bad of [[512], [-1], [1.5], [2 ** 31]]) {
        let err: unknown;
        try {
          await m.forward(bad);
        } catch (e) {
          err = e;
        }
        expect(err, String(bad)).to.be.instanceOf(RangeError);
      }
      expect(m.length).to.equal(0);
      m.dispose();
    }
    global.gc?.();
    expect(info().allocatedBytes).to.equal(before);
  });
});
