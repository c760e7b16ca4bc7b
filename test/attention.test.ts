// Fused attention and the KV cache on every path this machine runs, against a
// materialised f64 softmax computed here.
import { expect } from 'chai';
import { KVCache, Tensor, attention, attentionNaive } from '../lib/index';
import { describeEachIsa, randn, relErr, runChild } from './helpers';

interface Case { b: number; hq: number; hkv: number; tq: number; tk: number; d: number; causal: boolean }

/** f64 attention of the query rows listed (all when omitted): out [b, hq, tq, d] (unlisted rows 0). */
function ref(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, c: Case,
             opts: { scale?: number; mask?: (bi: number, h: number, i: number, j: number) => number; rows?: number[]; kvCap?: number } = {}): Float64Array {
  const { b, hq, hkv, tq, tk, d, causal } = c;
  const cap = opts.kvCap ?? tk, g = hq / hkv, scale = opts.scale ?? 1 / Math.sqrt(d);
  const out = new Float64Array(b * hq * tq * d);
  const s = new Float64Array(tk);
  const rows = opts.rows ?? [...Array(tq).keys()];
  for (let bi = 0; bi < b; bi++)
    for (let h = 0; h < hq; h++) {
      const kb = (bi * hkv + Math.floor(h / g)) * cap * d;
      for (const i of rows) {
        const qb = ((bi * hq + h) * tq + i) * d;
        let mx = -Infinity;
        for (let j = 0; j < tk; j++) {
          if (causal && j > i + tk - tq) { s[j] = -Infinity; continue; }
          let dot = 0;
          for (let x = 0; x < d; x++) dot += q[qb + x]! * k[kb + j * d + x]!;
          s[j] = dot * scale + (opts.mask ? opts.mask(bi, h, i, j) : 0);
          mx = Math.max(mx, s[j]!);
        }
        if (mx === -Infinity) continue;  // sees no key: zeros
        let sum = 0;
        for (let j = 0; j < tk; j++) { s[j] = Math.exp(s[j]! - mx); sum += s[j]!; }
        for (let x = 0; x < d; x++) {
          let acc = 0;
          for (let j = 0; j < tk; j++) acc += s[j]! * v[kb + j * d + x]!;
          out[qb + x] = acc / sum;
        }
      }
    }
  return out;
}

/** The listed query rows of out [b, hq, tq, d], flattened. */
function pick(x: ArrayLike<number>, c: Case, rows: number[]): number[] {
  const r: number[] = [];
  for (let bh = 0; bh < c.b * c.hq; bh++)
    for (const i of rows) for (let x2 = 0; x2 < c.d; x2++) r.push(x[(bh * c.tq + i) * c.d + x2]!);
  return r;
}

function inputs(c: Case, std = 1): { q: Float32Array; k: Float32Array; v: Float32Array } {
  return { q: randn(c.b * c.hq * c.tq * c.d, std), k: randn(c.b * c.hkv * c.tk * c.d, std), v: randn(c.b * c.hkv * c.tk * c.d) };
}

async function run(c: Case, data = inputs(c), rows?: number[]): Promise<{ err: number; out: Float32Array }> {
  const q = Tensor.from(data.q, [c.b, c.hq, c.tq, c.d]);
  const k = Tensor.from(data.k, [c.b, c.hkv, c.tk, c.d]);
  const v = Tensor.from(data.v, [c.b, c.hkv, c.tk, c.d]);
  const o = await attention(q, k, v, { causal: c.causal });
  const out = o.toArray() as Float32Array;
  [q, k, v, o].forEach((t) => t.dispose());
  const r = ref(data.q, data.k, data.v, c, { rows });
  return { err: rows ? relErr(pick(out, c, rows), pick(r, c, rows)) : relErr(out, r), out };
}

const label = (c: Case) => `b=${c.b} hq=${c.hq} hkv=${c.hkv} tq=${c.tq} tk=${c.tk} d=${c.d} causal=${c.causal}`;

describeEachIsa('attention', () => {

  it('prefill (tq = tk) within 1e-5 of f64 for d = 1, 3, 64, 80, 128, GQA / MQA, b = 1 and 3', async () => {
    const cases: Case[] = [];
    for (const d of [1, 3, 64, 80, 128])
      for (const [hq, hkv] of [[1, 1], [4, 1], [8, 2]] as const)
        for (const causal of [false, true]) cases.push({ b: d === 3 ? 3 : 1, hq, hkv, tq: 37, tk: 37, d, causal });
    for (const t of [1, 2, 64, 65, 130]) cases.push({ b: 3, hq: 4, hkv: 4, tq: t, tk: t, d: 64, causal: true });
    cases.push({ b: 1, hq: 8, hkv: 1, tq: 200, tk: 200, d: 96, causal: true });
    for (const c of cases) expect((await run(c)).err).to.be.below(1e-5, label(c));
  });

  it('long prefill tq = tk = 4096 (sampled rows checked) within 1e-5', async () => {
    const c: Case = { b: 1, hq: 2, hkv: 1, tq: 4096, tk: 4096, d: 64, causal: true };
    expect((await run(c, inputs(c), [0, 1, 63, 64, 1000, 2047, 4095])).err).to.be.below(1e-5);
  });

  it('decode (tq = 1) with tk up to 16384, split over the pool, within 1e-5', async () => {
    for (const [tk, hq, hkv, d] of [[1, 1, 1, 64], [7, 4, 4, 3], [1000, 8, 1, 128], [500, 7, 1, 64], [300, 6, 2, 24], [5000, 1, 1, 80], [16384, 4, 1, 128], [16384, 1, 1, 64]] as const) {
      const c: Case = { b: 1, hq, hkv, tq: 1, tk, d, causal: true };
      expect((await run(c)).err).to.be.below(1e-5, label(c));
    }
    const c3: Case = { b: 3, hq: 8, hkv: 2, tq: 1, tk: 333, d: 128, causal: false };
    expect((await run(c3)).err).to.be.below(1e-5, label(c3));
  });

  it('causal chunks with tq < tk are aligned bottom-right; rows that see no key (tq > tk) are zeros', async () => {
    for (const [tq, tk, hq] of [[5, 300, 4], [70, 200, 4], [64, 64 + 64, 4], [3, 1, 4], [2, 300, 6]] as const) {
      const c: Case = { b: 2, hq, hkv: 2, tq, tk, d: 64, causal: true };
      expect((await run(c)).err).to.be.below(1e-5, label(c));
    }
    const c: Case = { b: 1, hq: 2, hkv: 1, tq: 10, tk: 4, d: 16, causal: true };
    const { err, out } = await run(c);
    expect(err).to.be.below(1e-5);
    // query i sees keys j <= i - 6: rows 0..5 see nothing
    for (let h = 0; h < 2; h++) for (let i = 0; i < 6; i++) for (let x = 0; x < 16; x++) expect(out[(h * 10 + i) * 16 + x]).to.equal(0);
  });

  it('additive masks ([tq, tk] and broadcast [b|1, hq|1, tq, tk]) including -Infinity and fully masked rows', async () => {
    const c: Case = { b: 2, hq: 4, hkv: 2, tq: 9, tk: 70, d: 32, causal: false };
    const data = inputs(c);
    const q = Tensor.from(data.q, [c.b, c.hq, c.tq, c.d]);
    const k = Tensor.from(data.k, [c.b, c.hkv, c.tk, c.d]);
    const v = Tensor.from(data.v, [c.b, c.hkv, c.tk, c.d]);
    const val = (bi: number, h: number, i: number, j: number) =>
      i === 4 ? -Infinity : (j * 7 + i * 3 + h + bi * 5) % 11 === 0 ? -Infinity : Math.sin(i + j + h * 0.3 + bi);
    for (const shape of [[c.tq, c.tk], [c.b, 1, c.tq, c.tk], [1, c.hq, c.tq, c.tk], [c.b, c.hq, c.tq, c.tk]]) {
      const m = new Float32Array(shape.reduce((a, x) => a * x, 1));
      const bs = shape.length === 4 && shape[0] !== 1, hs = shape.length === 4 && shape[1] !== 1;
      const fn = (bi: number, h: number, i: number, j: number) => val(bs ? bi : 0, hs ? h : 0, i, j);
      let p = 0;
      for (let bi = 0; bi < (bs ? c.b : 1); bi++) for (let h = 0; h < (hs ? c.hq : 1); h++)
        for (let i = 0; i < c.tq; i++) for (let j = 0; j < c.tk; j++) m[p++] = fn(bi, h, i, j);
      const mask = Tensor.from(m, shape);
      for (const causal of [false, true]) {
        const o = (await attention(q, k, v, { mask, causal })).toArray();
        const r = ref(data.q, data.k, data.v, { ...c, causal }, { mask: fn });
        expect(relErr(o, r)).to.be.below(1e-5, `mask [${shape.join(', ')}] causal=${causal}`);
        for (let bh = 0; bh < c.b * c.hq; bh++) for (let x = 0; x < c.d; x++) expect(o[(bh * c.tq + 4) * c.d + x]).to.equal(0);
      }
      mask.dispose();
    }
    [q, k, v].forEach((t) => t.dispose());
  });

  it('custom scale, and NaN-free on large-magnitude inputs (running max subtracted)', async () => {
    const c: Case = { b: 1, hq: 2, hkv: 1, tq: 50, tk: 50, d: 64, causal: true };
    const data = inputs(c, 30);
    const q = Tensor.from(data.q, [1, 2, 50, 64]), k = Tensor.from(data.k, [1, 1, 50, 64]), v = Tensor.from(data.v, [1, 1, 50, 64]);
    const o = (await attention(q, k, v, { causal: true, scale: 0.5 })).toArray();
    expect(o.every(Number.isFinite)).to.equal(true);
    // scores of ~1e4: f32 rounding of the score (~1e-3 absolute) bounds the accuracy here
    expect(relErr(o, ref(data.q, data.k, data.v, c, { scale: 0.5 }))).to.be.below(1e-3);
  });

  for (const dtype of ['f32', 'f16', 'i8'] as const) {
    it(`KVCache (${dtype}): chunked appends + decode steps read the stored values exactly; bound vs unquantized`, async () => {
      const errs: number[] = [];
      // GQA groups of 4 (tile + converted row paths), one row per head with d % 8 != 0,
      // and one long single-head cache (in-register conversion, keys split over the pool)
      for (const [hq, hkv, d, maxSeq, prompt, b] of [[8, 2, 80, 200, 37, 2], [2, 2, 20, 64, 9, 1], [1, 1, 128, 1200, 700, 1]] as const)
        errs.push(...await kvCase(dtype, hq, hkv, d, maxSeq, prompt, b));
      if (dtype !== 'f32') console.log(`      ${dtype} KV: rel. error vs unquantized keys/values ${Math.max(...errs).toExponential(2)}`);
    });
  }

  async function kvCase(dtype: 'f32' | 'f16' | 'i8', hq: number, hkv: number, d: number, maxSeq: number, prompt: number, b: number): Promise<number[]> {
    {
      const steps = 5;
      const cache = new KVCache({ layers: 2, kvHeads: hkv, headDim: d, maxSeq, batch: b, dtype });
      const total = prompt + steps;
      const K = randn(b * hkv * total * d), V = randn(b * hkv * total * d), Q = randn(b * hq * total * d);
      // [b, h, t, d] slices of positions [t0, t1)
      const slice = (x: Float32Array, h: number, t0: number, t1: number) => {
        const o = new Float32Array(b * h * (t1 - t0) * d);
        for (let bh = 0; bh < b * h; bh++) o.set(x.subarray((bh * total + t0) * d, (bh * total + t1) * d), bh * (t1 - t0) * d);
        return Tensor.from(o, [b, h, t1 - t0, d]);
      };
      const check = async (t0: number, t1: number) => {
        await cache.append(1, slice(K, hkv, t0, t1), slice(V, hkv, t0, t1));
        expect(cache.length(1)).to.equal(t1);
        const q = slice(Q, hq, t0, t1);
        const o = (await attention(q, cache.view(1), null, { causal: true })).toArray();
        const c: Case = { b, hq, hkv, tq: t1 - t0, tk: t1, d, causal: true };
        // reference 1: on the values as stored (decoded here) -> the kernel's own error only
        const kst = decode(cache._k[1]!, cache._ks[1], b * hkv, maxSeq, d), vst = decode(cache._v[1]!, cache._vs[1], b * hkv, maxSeq, d);
        expect(relErr(o, ref(q.toArray(), kst, vst, c, { kvCap: maxSeq }))).to.be.below(1e-5, `stored ${t0}..${t1} hq=${hq} hkv=${hkv} d=${d}`);
        // reference 2: on the original f32 values -> storage error included
        const full = ref(q.toArray(), slice(K, hkv, 0, t1).toArray(), slice(V, hkv, 0, t1).toArray(), c);
        const bound = dtype === 'f32' ? 1e-5 : dtype === 'f16' ? 2e-3 : 3e-2;
        expect(relErr(o, full)).to.be.below(bound, `original ${t0}..${t1} hq=${hq} hkv=${hkv} d=${d}`);
        return relErr(o, full);
      };
      const errs = [await check(0, prompt)];
      for (let s = 0; s < steps; s++) errs.push(await check(prompt + s, prompt + s + 1));
      expect(cache.length(0)).to.equal(0);
      cache.dispose();
      return errs;
    }
  }

  it('the materialising comparison version agrees', async () => {
    const c: Case = { b: 1, hq: 4, hkv: 2, tq: 33, tk: 90, d: 64, causal: true };
    const data = inputs(c);
    const q = Tensor.from(data.q, [1, 4, 33, 64]), k = Tensor.from(data.k, [1, 2, 90, 64]), v = Tensor.from(data.v, [1, 2, 90, 64]);
    const o = (await attentionNaive(q, k, v, { causal: true })).toArray();
    expect(relErr(o, ref(data.q, data.k, data.v, c))).to.be.below(1e-5);
  });
});

function decode(t: Tensor, scales: Tensor | undefined, rows: number, cap: number, d: number): Float64Array {
  const vals = t.toArray();
  const sc = scales?.toArray();
  const o = new Float64Array(rows * cap * d);
  for (let r = 0; r < rows * cap; r++) for (let x = 0; x < d; x++) o[r * d + x] = vals[r * d + x]! * (sc ? sc[r]! : 1);
  return o;
}

describe('attention: concurrency and bad input', function () {
  this.timeout(120000);

  it('concurrent calls give the same results as sequential ones', async () => {
    const shapes: Case[] = [
      { b: 1, hq: 8, hkv: 2, tq: 100, tk: 100, d: 64, causal: true },
      { b: 2, hq: 4, hkv: 4, tq: 1, tk: 3000, d: 128, causal: true },
      { b: 1, hq: 1, hkv: 1, tq: 1, tk: 9000, d: 80, causal: false },
    ];
    const ts = shapes.map((c) => [Tensor.rand([c.b, c.hq, c.tq, c.d], { seed: 1 }), Tensor.rand([c.b, c.hkv, c.tk, c.d], { seed: 2 }), Tensor.rand([c.b, c.hkv, c.tk, c.d], { seed: 3 })] as const);
    const seq: Float32Array[] = [];
    for (let i = 0; i < shapes.length; i++) seq.push((await attention(ts[i]![0], ts[i]![1], ts[i]![2], { causal: shapes[i]!.causal })).toArray() as Float32Array);
    const par = await Promise.all(Array.from({ length: 12 }, (_, n) => {
      const i = n % shapes.length;
      return attention(ts[i]![0], ts[i]![1], ts[i]![2], { causal: shapes[i]!.causal });
    }));
    par.forEach((o, n) => expect(relErr(o.toArray(), seq[n % shapes.length]!)).to.equal(0));
  });

  it('rejects bad shapes, dtypes, head counts, masks and options with clear errors', async () => {
    const q = Tensor.rand([1, 6, 4, 16]), k = Tensor.rand([1, 4, 9, 16]), v = Tensor.rand([1, 4, 9, 16]);
    const k2 = Tensor.rand([1, 2, 9, 16]), v2 = Tensor.rand([1, 2, 9, 16]);
    const bad: [() => Promise<unknown>, RegExp][] = [
      [() => attention(q, k, v), /query heads \(6\) must be a multiple of key\/value heads \(4\)/],
      [() => attention(Tensor.rand([1, 4, 4, 8]), k2, v2), /head dim 8 but the keys have head dim 16/],
      [() => attention(Tensor.rand([2, 2, 4, 16]), k2, v2), /batch 2 but the keys have batch 1/],
      [() => attention(Tensor.rand([2, 4, 16]), k2, v2), /'q' must have 4 dimensions/],
      [() => attention(q, Tensor.rand([1, 2, 9, 16], { dtype: 'i8' }), v2), /'k' must have dtype f32 or f16 or bf16; got i8/],
      [() => attention(q, k2, Tensor.rand([1, 2, 9, 16], { dtype: 'f16' })), /same dtype/],
      [() => attention(q, k2, Tensor.rand([1, 2, 8, 16])), /same shape/],
      [() => attention(q, k2, v2, { mask: Tensor.rand([4, 8]) }), /mask must have shape \[4, 9\]/],
      [() => attention(q, k2, v2, { mask: Tensor.rand([1, 3, 4, 9]) }), /mask must have shape/],
      [() => attention(q, k2, v2, { scale: NaN }), /scale must be a finite number/],
      [() => attention(q, k2, null as unknown as Tensor), /'v' must be a f32\/f16\/bf16 Tensor; got null/],
      [() => attention({} as Tensor, k2, v2), /'q' must be a f32\/f16\/bf16 Tensor/],
    ];
    for (const [f, re] of bad) {
      let err: Error | undefined;
      try { await f(); } catch (e) { err = e as Error; }
      expect(err, String(re)).to.be.instanceOf(Error);
      expect(err!.message).to.match(re);
    }
    const d = Tensor.rand([1, 2, 9, 16]);
    d.dispose();
    let err: Error | undefined;
    try { await attention(q, d, v2); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/'k' has been disposed/);
  });

  it('KVCache: overflow, wrong shapes, empty views, bad options and use after dispose are clear errors', async () => {
    const c = new KVCache({ layers: 2, kvHeads: 2, headDim: 8, maxSeq: 10, dtype: 'i8' });
    await c.append(0, Tensor.rand([1, 2, 6, 8]), Tensor.rand([1, 2, 6, 8]));
    const fails: [() => unknown, RegExp][] = [
      [() => c.append(0, Tensor.rand([1, 2, 5, 8]), Tensor.rand([1, 2, 5, 8])), /layer 0 holds 6 positions; 5 more exceed maxSeq 10/],
      [() => c.append(0, Tensor.rand([1, 3, 1, 8]), Tensor.rand([1, 3, 1, 8])), /must have shape \[1, 2, t, 8\]/],
      [() => c.append(0, Tensor.rand([1, 2, 2, 8]), Tensor.rand([1, 2, 3, 8])), /the same t for k and v/],
      [() => c.append(2, Tensor.rand([1, 2, 1, 8]), Tensor.rand([1, 2, 1, 8])), /layer must be an integer in \[0, 1\]/],
      [() => attention(Tensor.rand([1, 2, 1, 8]), c.view(1), null), /layer 1 of the cache is empty/],
      [() => attention(Tensor.rand([1, 2, 1, 8]), c.view(0), Tensor.rand([1, 2, 1, 8])), /pass null for 'v'/],
      [() => new KVCache({ layers: 0, kvHeads: 1, headDim: 8, maxSeq: 4 }), /layers must be an integer/],
      [() => new KVCache({ layers: 1, kvHeads: 1, headDim: 8, maxSeq: 4, dtype: 'bf16' as 'f16' }), /dtype must be 'f32', 'f16' or 'i8'/],
      [() => new KVCache({ layers: 4096, kvHeads: 4096, headDim: 65536, maxSeq: 2 ** 24 }), /too large/],
    ];
    for (const [f, re] of fails) {
      let err: Error | undefined;
      try { await f(); } catch (e) { err = e as Error; }
      expect(err, String(re)).to.be.instanceOf(Error);
      expect(err!.message).to.match(re);
    }
    expect(c.length(0)).to.equal(6);  // failed appends left the layer as it was
    await c.append(0, Tensor.rand([1, 2, 4, 8]), Tensor.rand([1, 2, 4, 8]));
    expect(c.length(0)).to.equal(10);
    c.truncate(3);
    expect(c.length(0)).to.equal(3);
    c.dispose();
    expect(() => c.view(0)).to.throw(/the cache has been disposed/);
  });
});

describe('attention memory', function () {
  this.timeout(600000);

  it('prefill t = 16384, d = 128, 8 heads uses O(t*d) extra memory; the materialising version needs O(t^2)', () => {
    // RSS of a fresh process sampled while the op runs; inputs are allocated first.
    const probe = (t: number, naive: boolean) => {
      const r = runChild(`
        const { Tensor, attention, attentionNaive } = require('./lib/index');
        const { rssGrowth } = require('./lib/bench/harness');
        (async () => {
          const shape = [1, 8, ${t}, 128];
          const q = Tensor.rand(shape, { seed: 1 }), k = Tensor.rand(shape, { seed: 2 }), v = Tensor.rand(shape, { seed: 3 });
          await (${naive ? 'attentionNaive' : 'attention'})(Tensor.rand([1, 8, 64, 128]), Tensor.rand([1, 8, 64, 128]), Tensor.rand([1, 8, 64, 128]), { causal: true });
          let o;
          const grew = await rssGrowth(async () => { o = await (${naive ? 'attentionNaive' : 'attention'})(q, k, v, { causal: true }); });
          const after = grew / 1024;
          console.log(JSON.stringify({ extraKiB: after, outKiB: o.byteLength / 1024 }));
        })();
      `, {}, undefined, ['--expose-gc']);
      expect(r.status, r.stderr).to.equal(0);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { extraKiB: number; outKiB: number };
    };
    const t = 16384, flash = probe(t, false);
    const scoresKiB = (t * t * 4) / 1024;  // one head's score matrix: what the O(t^2) version must hold
    const extra = flash.extraKiB - flash.outKiB;
    console.log(`      flash t=${t}: ${(flash.extraKiB / 1024).toFixed(1)} MiB peak growth (output ${(flash.outKiB / 1024).toFixed(0)} MiB); one score matrix would be ${(scoresKiB / 1024).toFixed(0)} MiB`);
    expect(extra).to.be.below(32 * 1024);
    // the materialising version at t = 4096 already grows by its 64 MiB score matrix
    const naive = probe(4096, true);
    console.log(`      naive t=4096: ${(naive.extraKiB / 1024).toFixed(1)} MiB peak growth`);
    expect(naive.extraKiB - naive.outKiB).to.be.above((4096 * 4096 * 4) / 1024 * 0.9);
  });
});
