// int8 and f32 GEMM through the public API, on every ISA path this machine
// supports (forced one by one), against independent references.
import { expect } from 'chai';
import { ISAS, Tensor, info, linear, matmul, matmulInt8, prune, quantize, setIsa, setNumThreads, type IsaName } from '../lib/index';
import { loadNative } from '../lib/native';
import { describeEachIsa, randI8, randn, refLinear, refMatmulI8, relErr, runChild, random } from './helpers';

const supported = info().cpu.supportedIsas, emulated = info().cpu.emulatedIsas;
const best = info().kernels.gemm_s8;

const SHAPES: [number, number, number][] = [
  // m, n, k: decode rows, primes, k not a multiple of 4/16/64, tails everywhere
  [1, 1, 1], [1, 13, 7], [2, 17, 61], [3, 31, 64], [7, 67, 127], [8, 64, 129], [1, 257, 1000],
  [64, 97, 255], [129, 37, 67], [5, 1031, 257], [13, 16, 4099],
];

for (const isa of ISAS) {
  describe(`GEMM on the ${isa} path${emulated.includes(isa) ? ' (emulated intrinsics)' : ''}`, function () {
    before(function () {
      if (!supported.includes(isa)) {
        console.log(`      (skipped: this CPU/OS cannot run ${isa}; supported here: ${supported.join(', ')})`);
        this.skip();
      }
      setIsa(isa);
      expect(info().kernels.gemm_s8).to.equal(isa);
    });
    after(() => setIsa(best));

    it('matmulInt8 is exact on awkward shapes, full int8 range', async () => {
      for (const [m, n, k] of SHAPES) {
        for (const [alo, blo] of [[-127, -128], [-128, -127], [-128, -128]]) {
          const a = randI8(m * k, alo), b = randI8(n * k, blo);
          const A = Tensor.from(a, [m, k]), B = Tensor.from(b, [n, k]);
          const C = await matmulInt8(A, B);
          expect(C.dtype).to.equal('i32');
          expect(C.shape).to.deep.equal([m, n]);
          expect(Array.from(C.toArray())).to.deep.equal(Array.from(refMatmulI8(a, b, m, n, k)), `m=${m} n=${n} k=${k}`);
          A.dispose(); B.dispose(); C.dispose();
        }
      }
    });

    // many row and column tasks; an emulated path (plain C++ per lane) runs a smaller one
    const [m, n, k] = emulated.includes(isa) ? [160, 1040, 1000] : [512, 4096, 4096];
    it(`matmulInt8 is exact at m=${m}, n=${n}, k=${k} (sampled entries)`, async function () {
      this.timeout(300000);
      const a = randI8(m * k, -127), b = randI8(n * k);
      const A = Tensor.from(a, [m, k]), B = Tensor.from(b, [n, k]);
      const C = (await matmulInt8(A, B)).toArray() as Int32Array;
      for (let s = 0; s < 3000; s++) {
        const i = Math.floor(random() * m), j = Math.floor(random() * n);
        let acc = 0;
        for (let q = 0; q < k; q++) acc += a[i * k + q]! * b[j * k + q]!;
        if (C[i * n + j] !== acc) expect.fail(`C[${i},${j}] = ${C[i * n + j]}, want ${acc}`);
      }
      A.dispose(); B.dispose();
    });

    it('linear (int8 weights, dynamic per-token activations) matches the quantized f64 reference and stays within the int8 error bound', async () => {
      for (const [m, n, k] of SHAPES) {
        for (const opts of [{}, { granularity: 'per-group' as const, groupSize: 32 }, { granularity: 'per-group' as const, groupSize: 128, symmetric: false }]) {
          const x = randn(m * k, 2), w = randn(n * k, 0.05), bias = randn(n);
          const X = Tensor.from(x, [m, k]), W = Tensor.from(w, [n, k]), Bi = Tensor.from(bias, [n]);
          const qw = quantize(W, opts);
          const Y = await linear(X, qw, Bi);
          const y = Y.toArray() as Float32Array;
          // the same computation in f64 from the quantized operands: only rounding may differ
          const xq = new Float64Array(m * k);
          for (let i = 0; i < m; i++) {
            let amax = 0;
            for (let q = 0; q < k; q++) amax = Math.max(amax, Math.abs(x[i * k + q]!));
            const s = amax > 0 ? Math.fround(amax / 127) : 1, inv = Math.fround(1 / s);
            for (let q = 0; q < k; q++) {
              const v = Math.fround(x[i * k + q]! * inv);
              const r = Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v);
              xq[i * k + q] = Math.max(-127, Math.min(127, r)) * s;
            }
          }
          const wq = qw.dequantize().toArray();
          expect(relErr(y, refLinear(xq, wq, bias, m, n, k))).to.be.below(1e-5, `m=${m} n=${n} k=${k} ${JSON.stringify(opts)}`);
          // and against the unquantized f32 product: the int8 bound (docs/PERFORMANCE.md, "int8 accuracy bound")
          const yRef = refLinear(x, w, bias, m, n, k);
          expect(relErr(y, yRef)).to.be.below(0.03, `int8 bound m=${m} n=${n} k=${k}`);
          for (const t of [X, W, Bi, Y]) t.dispose();
          qw.dispose();
        }
      }
    });

    it('linear with a static input scale (calibrated activations)', async () => {
      const m = 9, n = 33, k = 70;
      const x = randn(m * k), w = randn(n * k);
      const X = Tensor.from(x, [m, k]), W = Tensor.from(w, [n, k]);
      const qw = quantize(W);
      let amax = 0;
      for (const v of x) amax = Math.max(amax, Math.abs(v));
      const Y = await linear(X, qw, null, { inputScale: amax / 127 });
      expect(relErr(Y.toArray(), refLinear(x, w, null, m, n, k))).to.be.below(0.03);
      X.dispose(); W.dispose(); Y.dispose(); qw.dispose();
    });

    it('f32 linear and matmul within 1e-5 of f64', async () => {
      for (const [m, n, k] of [...SHAPES, [300, 129, 515] as [number, number, number]]) {
        const x = randn(m * k), w = randn(n * k), b = randn(k * n), bias = randn(n);
        const X = Tensor.from(x, [m, k]), W = Tensor.from(w, [n, k]), B = Tensor.from(b, [k, n]), Bi = Tensor.from(bias, [n]);
        const Y = await linear(X, W, Bi);
        expect(relErr(Y.toArray(), refLinear(x, w, bias, m, n, k))).to.be.below(1e-5, `linear m=${m} n=${n} k=${k}`);
        const C = await matmul(X, B);
        const bt = new Float32Array(n * k);
        for (let q = 0; q < k; q++) for (let j = 0; j < n; j++) bt[j * k + q] = b[q * n + j]!;
        expect(relErr(C.toArray(), refLinear(x, bt, null, m, n, k))).to.be.below(1e-5, `matmul m=${m} n=${n} k=${k}`);
        for (const t of [X, W, B, Bi, Y, C]) t.dispose();
      }
    });
  });
}

describe('GEMM with other thread counts', () => {
  after(() => setNumThreads(info().cpu.physicalCores));
  it('gives the same exact results on 1 and 3 threads', async () => {
    const m = 67, n = 300, k = 333;
    const a = randI8(m * k), b = randI8(n * k);
    const want = Array.from(refMatmulI8(a, b, m, n, k));
    for (const t of [1, 3]) {
      setNumThreads(t);
      expect(info().threads).to.equal(t);
      const A = Tensor.from(a, [m, k]), B = Tensor.from(b, [n, k]);
      expect(Array.from((await matmulInt8(A, B)).toArray())).to.deep.equal(want);
      A.dispose(); B.dispose();
    }
  });
});

describe('SPARQ_ISA and SPARQ_THREADS in a fresh process', function () {
  this.timeout(120000);
  const probe = `
    const { info, matmulInt8, Tensor } = require('./lib/index');
    const a = Tensor.from(Int8Array.from([1, -2, 3, -128, 5]), [1, 5]);
    const b = Tensor.from(Int8Array.from([-128, 7, 1, -1, 2, 3, 4, 5, 6, 7]), [2, 5]);
    matmulInt8(a, b).then((c) => console.log(JSON.stringify({ isa: info().kernels.gemm_s8, threads: info().threads, c: Array.from(c.toArray()) })));
  `;
  for (const isa of ISAS) {
    it(`SPARQ_ISA=${isa} ${supported.includes(isa) ? 'forces that path' : 'fails with a clear error (CPU lacks it)'}`, () => {
      const r = runChild(probe, { SPARQ_ISA: isa, SPARQ_THREADS: '3' });
      if (supported.includes(isa)) {
        expect(r.status, r.stderr).to.equal(0);
        const out = JSON.parse(r.stdout) as { isa: IsaName; threads: number; c: number[] };
        expect(out.isa).to.equal(isa);
        expect(out.threads).to.equal(3);
        expect(out.c).to.deep.equal([-128 - 14 + 3 + 128 + 10, 3 - 8 + 15 - 768 + 35]);
      } else {
        expect(r.status).to.not.equal(0);
        expect(r.stderr).to.match(new RegExp(`SPARQ_ISA=${isa} cannot run here: this CPU/OS lacks`));
      }
    });
  }
  it('SPARQ_THREADS that is not an integer in [1, 1024] is refused', () => {
    for (const v of ['abc', '1e3', '0', '100000']) {
      const r = runChild(probe, { SPARQ_THREADS: v });
      expect(r.status, v).to.not.equal(0);
      expect(r.stderr).to.contain(`SPARQ_THREADS='${v}' is not an integer in [1, 1024]`);
    }
  });
  it('SPARQ_ISA=bogus is refused', () => {
    const r = runChild(probe, { SPARQ_ISA: 'bogus' });
    expect(r.status).to.not.equal(0);
    expect(r.stderr).to.match(/SPARQ_ISA='bogus' is not one of/);
  });
});

describeEachIsa('non-finite activations', () => {
  it('a NaN or Inf in a row makes that row of every int8 product NaN (as in f32); the other rows are unchanged', async () => {
    const nat = loadNative();
    const [m, k, n] = [3, 100, 20];
    const wv = randn(n * k), w = Tensor.from(wv, [n, k]);
    const xs = randn(m * k);
    const weights: [string, (x: Tensor) => Promise<Tensor>][] = [];
    const pc = quantize(w), pg = quantize(w, { granularity: 'per-group', groupSize: 32 });
    const sp = quantize(prune(w, { sparsity: 0.5, format: 'bitmask' }));
    const q4 = await nat.q4Quantize(w._storage, w._offset, n, k, 32);
    weights.push(['per channel', (x) => linear(x, pc)], ['per group', (x) => linear(x, pg)], ['static scale', (x) => linear(x, pc, undefined, { inputScale: 0.05 })],
      ['sparse int8', (x) => linear(x, sp)],
      ['int4', async (x) => { const o = Tensor.zeros([m, n]); await nat.linearQ4(q4, x._storage, x._offset, m, o._storage, o._offset); return o; }]);
    for (const bad of [NaN, Infinity, -Infinity])
      for (const [name, run] of weights) {
        const clean = Tensor.from(xs, [m, k]), dirty = Tensor.from(Float32Array.from(xs, (v, i) => (i === k + 37 ? bad : v)), [m, k]);
        const a = (await run(clean)).toArray(), b = (await run(dirty)).toArray();
        expect(Array.from(b.subarray(n, 2 * n)).every(Number.isNaN), `${name} ${bad}: row 1 NaN`).to.equal(true);
        expect(Array.from(b.subarray(0, n)), `${name} ${bad}: row 0`).to.deep.equal(Array.from(a.subarray(0, n)));
        expect(Array.from(b.subarray(2 * n)), `${name} ${bad}: row 2`).to.deep.equal(Array.from(a.subarray(2 * n)));
        [clean, dirty].forEach((t) => t.dispose());
      }
    [w, pc, pg, sp, q4].forEach((t) => t.dispose());
  });
});

describe('machine ceilings (the benchmarks\' "% of peak")', () => {
  it('are measured for every unit the CPU itself has, and 0 for the others', async function () {
    this.timeout(60000);
    const c = await loadNative().ceilings(16 * 2 ** 20);
    const hw = (isa: IsaName) => supported.includes(isa) && !emulated.includes(isa);
    expect(c.threads).to.equal(info().threads);
    expect(c.dramReadGBs).to.be.above(0);
    if (hw('avx2')) {
      expect(c.fp32Avx2Gops).to.be.above(0);
      expect(c.int8Avx2Gops).to.be.above(0);
    }
    if (hw('avxvnni')) expect(c.int8AvxvnniGops).to.be.above(0);
    else expect(c.int8AvxvnniGops).to.equal(0);
    if (hw('avx512vnni')) {
      expect(c.fp32Avx512Gops).to.be.above(0);
      expect(c.int8Avx512vnniGops).to.be.above(0);
    } else {
      expect(c.fp32Avx512Gops).to.equal(0);
      expect(c.int8Avx512vnniGops).to.equal(0);
    }
  });
});
