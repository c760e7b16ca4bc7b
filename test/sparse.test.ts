// Pruners and sparse weights: every format and path against dense results on
// the same pruned weights, the pruners' exact counts and patterns.
import { expect } from 'chai';
import { Tensor, info, linear, prune, pruneRows, quantize, type SparseFormat } from '../lib/index';
import { globalThreshold } from '../lib/model/prune';
import { f16ToF32, f32ToF16 } from '../lib/tensor';
import { describeEachIsa, quantRowsRef, randn, refLinear, relErr, random, roundEven } from './helpers';

const shapes: [number, number][] = [[1, 1], [7, 33], [16, 64], [33, 100], [64, 257]];
const f = Math.fround;

/** int8 sparse linear: activations quantized per row, exact integer dots, acc * (xs * ws) + bias. */
function refSparseI8(x: Float32Array, pruned: ArrayLike<number>, bias: Float32Array, m: number, n: number, k: number): Float64Array {
  const X = quantRowsRef(x, m, k), W = quantRowsRef(pruned, n, k);
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let c = 0; c < k; c++) acc += X.q[i * k + c]! * W.q[j * k + c]!;
      y[i * n + j] = acc * f(X.s[i]! * W.s[j]!) + bias[j]!;
    }
  return y;
}

describeEachIsa('sparse linear', () => {
  it('csr, bitmask and N:M, m = 1..40, sparsity 0..1: f32 within 1e-5 of the dense product, int8 equal to the W8A8 reference', async () => {
    for (const [n, k] of shapes)
      for (const sp of [0, 0.5, 0.9, 0.99, 1])
        for (const m of [1, 3, 8, 9, 15, 16, 40]) {
          const w = Tensor.from(randn(n * k), [n, k]), x = randn(m * k), bias = randn(n);
          const X = Tensor.from(x, [m, k]), B = Tensor.from(bias);
          const variants: [string, Parameters<typeof prune>[1]][] = [
            ['csr', { sparsity: sp, format: 'csr' }], ['bitmask', { sparsity: sp, format: 'bitmask' }],
          ];
          if (sp === 0.5) variants.push(['2:4 nm', { pattern: '2:4' }], ['4:8 nm', { pattern: '4:8' }], ['2:4 csr', { pattern: '2:4', format: 'csr' }]);
          for (const [name, o] of variants) {
            const sw = prune(w, o);
            const pruned = (await sw.toDense()).toArray();
            for (const s of [sw, quantize(sw)]) {
              const y = (await linear(X, s, B)).toArray();
              const label = `${name} ${s.dtype} n=${n} k=${k} m=${m} sparsity=${sp}`;
              const ref = s.dtype === 'f32' ? refLinear(x, pruned, bias, m, n, k) : refSparseI8(x, pruned, bias, m, n, k);
              if (s.dtype === 'f32') {
                // f32 sums in any order: each output within 1e-5 of the magnitude of its terms (a relative
                // error of the result fails where x.w cancels the bias: n = k = m = 1 once gave 1.4e-5)
                const mag = refLinear(x.map(Math.abs), Array.from(pruned, Math.abs), bias.map(Math.abs), m, n, k);
                const worst = Math.max(...Array.from(y, (v, i) => Math.abs(v - ref[i]!) / (mag[i]! + 1e-30)));
                expect(worst, label).to.be.below(1e-5);
              } else {
                // int8: the integer part is exact; the one float rounding of the epilogue may differ by an ulp
                expect(relErr(y, ref), label).to.be.below(1e-6);
              }
              s.dispose();
            }
          }
          [w, X, B].forEach((t) => t.dispose());
        }
  });
});

/** int4 sparse values: per row and group of `g` columns, scale = f16(max|w| / 7), q = round(w / scale) in [-7, 7]. */
function quant4Ref(w: ArrayLike<number>, n: number, k: number, g: number): { q: Int32Array; s: Float64Array } {
  const G = Math.ceil(k / g), q = new Int32Array(n * k), s = new Float64Array(n * G);
  for (let j = 0; j < n; j++)
    for (let b = 0; b < G; b++) {
      let mx = 0;
      for (let c = b * g; c < Math.min(k, b * g + g); c++) mx = Math.max(mx, Math.abs(w[j * k + c]!));
      const sc = f16ToF32(f32ToF16(f(mx / 7))), inv = sc > 0 ? f(1 / sc) : 0;
      s[j * G + b] = sc;
      for (let c = b * g; c < Math.min(k, b * g + g); c++) q[j * k + c] = Math.max(-7, Math.min(7, roundEven(f(w[j * k + c]! * inv))));
    }
  return { q, s };
}

describeEachIsa('sparse int4 values', () => {
  it('bitmask and N:M, groups of 32 / 64 / 128, m = 1..40: dequantized exactly as the reference quantizes, products within 1e-5 of it', async () => {
    for (const [n, k] of [[1, 1], [7, 33], [16, 64], [33, 100], [64, 257], [5, 130]] as [number, number][])
      for (const [name, o] of [['bitmask 50%', { sparsity: 0.5, format: 'bitmask' }], ['bitmask 90%', { sparsity: 0.9, format: 'bitmask' }],
        ['2:4', { pattern: '2:4' }], ['4:8', { pattern: '4:8' }]] as [string, Parameters<typeof prune>[1]][]) {
        const w = Tensor.from(randn(n * k), [n, k]);
        const sw = prune(w, o);
        const pruned = (await sw.toDense()).toArray();
        for (const g of [32, 64, 128]) {
          const s = quantize(sw, { bits: 4, groupSize: g });
          const label = `${name} g${g} n=${n} k=${k}`;
          expect([s.dtype, s.groupSize, s.format, s.pattern], label).to.deep.equal(['i4', g, sw.format, sw.pattern]);
          const R = quant4Ref(pruned, n, k, g), G = Math.ceil(k / g);
          const deq = (await s.toDense()).toArray();
          for (let i = 0; i < n * k; i++) {
            const want = R.q[i]! * R.s[Math.floor(i / k) * G + Math.floor((i % k) / g)]!;
            if (deq[i] !== f(want)) expect.fail(`${label}: element ${i} dequantizes to ${deq[i]}, want ${want}`);
          }
          for (const m of [1, 3, 8, 9, 15, 16, 40]) {
            const x = randn(m * k), bias = randn(n);
            const X = Tensor.from(x, [m, k]), B = Tensor.from(bias);
            const y = (await linear(X, s, B)).toArray();
            const A = quantRowsRef(x, m, k), ref = new Float64Array(m * n);
            for (let i = 0; i < m; i++)
              for (let j = 0; j < n; j++) {
                let acc = 0;
                for (let b = 0; b < G; b++) {
                  let sum = 0;
                  for (let c = b * g; c < Math.min(k, b * g + g); c++) sum += A.q[i * k + c]! * R.q[j * k + c]!;
                  acc += sum * R.s[j * G + b]!;
                }
                ref[i * n + j] = acc * A.s[i]! + bias[j]!;
              }
            expect(relErr(y, ref), `${label} m=${m}`).to.be.below(1e-5);
            [X, B].forEach((t) => t.dispose());
          }
          s.dispose();
        }
        sw.dispose();
        w.dispose();
      }
  });
});

describeEachIsa('sparse int8 prefill', () => {
  it('n over several expanded strips (the last one partial), m = 16 / 17: equal to the W8A8 reference', async () => {
    const [n, k] = [300, 4000];
    const w = Tensor.from(randn(n * k), [n, k]), bias = randn(n), B = Tensor.from(bias);
    for (const o of [{ sparsity: 0.5, format: 'bitmask' }, { sparsity: 0.7, format: 'csr' }, { pattern: '2:4' }] as const) {
      const s = quantize(prune(w, o)), pruned = (await s.toDense()).toArray();
      for (const m of [16, 17]) {
        const x = randn(m * k), X = Tensor.from(x, [m, k]);
        const y = (await linear(X, s, B)).toArray();
        expect(relErr(y, refSparseI8(x, pruned, bias, m, n, k)), `${JSON.stringify(o)} m=${m}`).to.be.below(1e-6);
        X.dispose();
      }
      s.dispose();
    }
    [w, B].forEach((t) => t.dispose());
  });
});

describeEachIsa('sparse csr columns', () => {
  it('k <= 65536 stores uint16 columns, wider k int32: both multiply right (f32 and int8)', async () => {
    for (const k of [65536, 70001]) {
      const n = 3, w = Tensor.from(randn(n * k), [n, k]), bias = randn(n);
      const sw = prune(w, { sparsity: 0.99, format: 'csr' });
      const pruned = (await sw.toDense()).toArray();
      for (const m of [1, 9, 17]) {
        const x = randn(m * k), X = Tensor.from(x, [m, k]), B = Tensor.from(bias);
        expect(relErr((await linear(X, sw, B)).toArray(), refLinear(x, pruned, bias, m, n, k)), `f32 k=${k} m=${m}`).to.be.below(1e-5);
        const q = quantize(sw);
        expect(relErr((await linear(X, q, B)).toArray(), refSparseI8(x, pruned, bias, m, n, k)), `int8 k=${k} m=${m}`).to.be.below(1e-6);
        [X, B, q].forEach((t) => t.dispose());
      }
      // 1% of the weights: values + 2-byte columns below 64K columns, 4-byte above
      const nnz = Math.round(0.01 * k) * n;
      expect(sw.bytes - (n + 1) * 8 - 32).to.be.within(nnz * (k <= 65536 ? 6 : 8), nnz * (k <= 65536 ? 6 : 8) + 64);
      sw.dispose();
      w.dispose();
    }
  });
});

describeEachIsa('sparse int8 linear', (isa) => {
  it('int32 accumulation is exact: integer weights and activations at full int8 range give the integer products', async () => {
    // the AVX-512 sparse kernels need VBMI2: on hardware when the CPU has it, always in the emulated build
    const vbmi2 = info().cpu.features.includes('avx512vbmi2') || (info().cpu.emulatedIsas as string[]).includes(isa);
    expect(info().kernels.sparse).to.equal(isa === 'ref' ? 'ref' : (isa === 'avx512vnni' || isa === 'amx') && vbmi2 ? 'avx512vbmi2' : 'avx2');
    for (const [m, n, k] of [[1, 5, 1000], [3, 17, 4099], [8, 4, 64], [12, 9, 333], [20, 37, 300]] as const) {
      // every row reaches +-127 so both scales are exactly 1
      const xi = new Float32Array(m * k).map((_, i) => (i % k === 0 ? 127 : Math.round((random() * 2 - 1) * 127)));
      const wi = new Float32Array(n * k).map((_, i) => (i % k === 1 ? -127 : random() < 0.5 ? 0 : Math.round((random() * 2 - 1) * 127)));
      const X = Tensor.from(xi, [m, k]), W = Tensor.from(wi, [n, k]);
      const exact = new Float64Array(m * n);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) { let a = 0; for (let c = 0; c < k; c++) a += xi[i * k + c]! * wi[j * k + c]!; exact[i * n + j] = a; }
      for (const format of ['csr', 'bitmask'] as const) {
        const s = quantize(prune(W, { sparsity: 0, format }));
        const y = (await linear(X, s)).toArray();
        expect(Array.from(y), `${format} m=${m} n=${n} k=${k}`).to.deep.equal(Array.from(exact));
        s.dispose();
      }
      [X, W].forEach((t) => t.dispose());
    }
  });
});

describe('pruners', function () {
  this.timeout(60000);

  it('unstructured: exactly round(sparsity * count) zeros per layer or per row, the smallest scores first', () => {
    const [n, k] = [13, 97];
    const v = randn(n * k);
    const w = Tensor.from(v, [n, k]);
    for (const sparsity of [0, 0.25, 0.5, 0.9, 1]) {
      const sw = prune(w, { sparsity, format: 'bitmask' });
      expect(sw.sparsity).to.be.closeTo(Math.round(sparsity * n * k) / (n * k), 1e-12);
      const r = prune(w, { sparsity, granularity: 'row', format: 'csr' });
      expect(r.sparsity).to.be.closeTo((n * Math.round(sparsity * k)) / (n * k), 1e-12);
      sw.dispose();
      r.dispose();
    }
    // magnitude, per layer: every kept |w| >= every dropped |w|
    const half = prune(w, { sparsity: 0.5, format: 'csr' });
    return half.toDense().then((d) => {
      const dv = d.toArray();
      let keptMin = Infinity, droppedMax = 0;
      for (let i = 0; i < v.length; i++) {
        if (dv[i] === 0) droppedMax = Math.max(droppedMax, Math.abs(v[i]!));
        else keptMin = Math.min(keptMin, Math.abs(v[i]!));
      }
      expect(keptMin).to.be.at.least(droppedMax);
      half.dispose();
    });
  });

  it('N:M: exactly N nonzeros kept in every group of M (the largest), tails included', async () => {
    for (const [pattern, N, M] of [['2:4', 2, 4], ['4:8', 4, 8]] as const) {
      const [n, k] = [9, 30];  // 30 % 4 and 30 % 8 leave partial groups
      const v = randn(n * k);
      const sw = prune(Tensor.from(v, [n, k]), { pattern });
      expect(sw.format).to.equal('nm');
      const d = (await sw.toDense()).toArray();
      for (let j = 0; j < n; j++)
        for (let g = 0; g < k; g += M) {
          const idx = Array.from({ length: Math.min(M, k - g) }, (_, t) => j * k + g + t);
          const kept = idx.filter((i) => d[i] !== 0);
          expect(kept.length, `row ${j} group ${g}`).to.equal(Math.min(N, idx.length));
          const minKept = Math.min(...kept.map((i) => Math.abs(v[i]!)));
          for (const i of idx) if (d[i] === 0) expect(Math.abs(v[i]!)).to.be.at.most(minKept);
        }
      sw.dispose();
    }
  });

  it('Wanda equals magnitude when activation norms are all equal, and follows the norms otherwise', async () => {
    const [n, k] = [8, 64];
    const w = Tensor.from(randn(n * k), [n, k]);
    for (const opts of [{ sparsity: 0.5, granularity: 'row' as const }, { pattern: '2:4' as const }]) {
      const a = await prune(w, { ...opts, method: 'magnitude' }).toDense();
      const b = await prune(w, { ...opts, method: 'wanda', activationNorms: new Array<number>(k).fill(3) }).toDense();
      expect(Array.from(b.toArray())).to.deep.equal(Array.from(a.toArray()));
    }
    // a channel with a huge activation norm survives
    const normsArr = new Array<number>(k).fill(1);
    normsArr[5] = 1e6;
    const c = (await prune(w, { method: 'wanda', sparsity: 0.9, activationNorms: normsArr }).toDense()).toArray();
    for (let j = 0; j < n; j++) expect(c[j * k + 5]).to.not.equal(0);
  });

  it('pruneRows removes the lowest-scoring whole rows and shrinks the matrix', async () => {
    const [n, k] = [10, 16];
    const v = randn(n * k);
    for (let c = 0; c < k; c++) { v[3 * k + c] = 0.01; v[7 * k + c] = 0.02; }  // two weak rows
    const w = Tensor.from(v, [n, k]);
    const { weight, kept } = pruneRows(w, { sparsity: 0.2 });
    expect(weight.shape).to.deep.equal([8, k]);
    expect(Array.from(kept)).to.deep.equal([0, 1, 2, 4, 5, 6, 8, 9]);
    const out = weight.toArray();
    kept.forEach((r, i) => expect(Array.from(out.subarray(i * k, (i + 1) * k))).to.deep.equal(Array.from(v.subarray(r * k, (r + 1) * k))));
    // the kept rows compute the same outputs as before
    const x = Tensor.from(randn(3 * k), [3, k]);
    const full = (await linear(x, w)).toArray(), part = (await linear(x, weight)).toArray();
    for (let i = 0; i < 3; i++) kept.forEach((r, jj) => expect(part[i * 8 + jj]).to.be.closeTo(full[i * n + r]!, 1e-5));
    // Wanda: a channel with a huge activation norm makes the rows that use it strong
    const norms = new Array<number>(k).fill(1e-3);
    norms[0] = 1e6;
    const vv = randn(n * k).map((a, i) => (i % k === 0 ? (Math.floor(i / k) === 3 ? 1 : 1e-6) : a));
    const wanda = pruneRows(Tensor.from(vv, [n, k]), { method: 'wanda', sparsity: 0.9, activationNorms: norms });
    expect(Array.from(wanda.kept)).to.deep.equal([3]);
    expect(() => pruneRows(w, { sparsity: 1 })).to.throw(/sparsity must be in \[0, 1\)/);
    const eight = Tensor.from(randn(8 * 4), [8, 4]);
    expect(() => pruneRows(eight, { sparsity: 0.99 })).to.throw(RangeError, /sparsity 0.99 of 8 rows removes every row/);
    eight.dispose();
  });

  it('quantize(prune(w)) keeps the sparsity, the format and the pattern', () => {
    const sw = prune(Tensor.from(randn(16 * 64), [16, 64]), { pattern: '2:4' });
    const q = quantize(sw);
    expect([q.dtype, q.format, q.pattern, q.sparsity]).to.deep.equal(['i8', 'nm', '2:4', sw.sparsity]);
    expect(q.bytes).to.be.below(sw.bytes);
  });

  it('bad input gives clear errors', async () => {
    const w = Tensor.from(randn(4 * 8), [4, 8]);
    const fails: [() => unknown, RegExp][] = [
      [() => prune(w, { sparsity: 1.5 }), /sparsity must be in \[0, 1\]/],
      [() => prune(w, { method: 'wanda' }), /needs activationNorms/],
      [() => prune(w, { method: 'wanda', activationNorms: [1, 2] }), /must have 8 entries/],
      [() => prune(w, { pattern: '3:4' as '2:4' }), /pattern must be/],
      [() => prune(w, { pattern: '2:4', sparsity: 0.3 }), /fixes the sparsity/],
      [() => prune(w, { format: 'nm' }), /needs pattern '2:4' or '4:8'/],
      [() => prune(Tensor.from(randn(8), [8]), {}), /'w' must have 2 dimensions/],
      [() => linear(Tensor.from(randn(3 * 5), [3, 5]), prune(w, {})), /w\.shape\[1\]/],
      [() => { const s = prune(w, {}); s.dispose(); return linear(Tensor.from(randn(8), [1, 8]), s); }, /disposed/],
      [() => quantize(quantize(prune(w, {}))), /already quantized \(i8\)/],
      [() => quantize(quantize(prune(w, {}), { bits: 4 })), /already quantized \(i4\)/],
      [() => quantize(prune(w, { format: 'csr' }), { bits: 4 }), /need the bitmask or nm format/],
      [() => quantize(prune(w, {}), { bits: 4, groupSize: 16 }), /groupSize must be 32, 64 or 128/],
      [() => quantize(prune(w, {}), { groupSize: 32 }), /groupSize applies to 4-bit/],
      [() => quantize(prune(w, {}), { bits: 2 as 4 }), /bits must be 8 or 4/],
    ];
    for (const [f, re] of fails) {
      let err: Error | undefined;
      try { await f(); } catch (e) { err = e as Error; }
      expect(err?.message, String(re)).to.match(re);
    }
    const formats: SparseFormat[] = ['csr', 'bitmask'];
    for (const format of formats) expect(prune(w, { format }).format).to.equal(format);
  });
});

describe('global magnitude threshold', () => {
  it('finds the exact cut over several weights, ties included', () => {
    const a = Tensor.from(new Float32Array([0.5, -0.1, 0.3, 0.3, -0.3, 2]), [2, 3]);
    const b = Tensor.from(new Float32Array([0.3, -1e-30, 0, 7]), [1, 4]);
    // sorted |w|: 0, 1e-30, 0.1, 0.3 x4, 0.5, 2, 7
    expect(globalThreshold([a, b], 0)).to.deep.equal({ t: -Infinity, ties: 0 });
    expect(globalThreshold([a, b], 2)).to.deep.equal({ t: Math.fround(1e-30), ties: 1 });
    expect(globalThreshold([a, b], 3)).to.deep.equal({ t: Math.fround(0.1), ties: 1 });
    expect(globalThreshold([a, b], 5)).to.deep.equal({ t: Math.fround(0.3), ties: 2 });  // two of the four 0.3s
    expect(globalThreshold([a, b], 10)).to.deep.equal({ t: 7, ties: 1 });
    // random: the cut leaves exactly `count` strictly below or tied
    const ws = [Tensor.from(randn(5000), [50, 100]), Tensor.from(randn(3000), [30, 100])];
    const all = ws.flatMap((t) => Array.from(t.toArray() as Float32Array, Math.abs)).sort((x, y) => x - y);
    for (const count of [1, 777, 4000, 7999]) {
      const { t, ties } = globalThreshold(ws, count);
      expect(t).to.equal(all[count - 1]);
      expect(all.filter((v) => v < t).length + ties).to.equal(count);
    }
  });
});
