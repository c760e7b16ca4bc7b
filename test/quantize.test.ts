// Quantizers against an independent JS implementation of the same contract,
// error metrics, and calibration observers.
import { expect } from 'chai';
import { Observer, Tensor, paramsFor, quantizationError, quantize, quantizeAsync } from '../lib/index';
import { randn, roundEven } from './helpers';

/** JS reference: symmetric or asymmetric int8 over groups of `gs` along k. */
function refQuant(w: Float32Array, n: number, k: number, gs: number, symmetric: boolean) {
  const groups = Math.ceil(k / gs);
  const q = new Int8Array(n * k), s = new Float32Array(n * groups), z = new Int32Array(n * groups);
  for (let j = 0; j < n; j++)
    for (let g = 0; g < groups; g++) {
      const k0 = g * gs, k1 = Math.min(k, k0 + gs);
      if (symmetric) {
        let amax = 0;
        for (let t = k0; t < k1; t++) amax = Math.max(amax, Math.abs(w[j * k + t]!));
        const sc = amax > 0 ? Math.fround(amax / 127) : 1, inv = Math.fround(1 / sc);
        for (let t = k0; t < k1; t++) q[j * k + t] = Math.max(-127, Math.min(127, roundEven(Math.fround(w[j * k + t]! * inv))));
        s[j * groups + g] = sc;
      } else {
        let mn = 0, mx = 0;
        for (let t = k0; t < k1; t++) { mn = Math.min(mn, w[j * k + t]!); mx = Math.max(mx, w[j * k + t]!); }
        let sc = Math.fround(Math.fround(mx - mn) / 255);
        if (!(sc > 0)) sc = 1;
        const inv = Math.fround(1 / sc);
        const zp = Math.max(-128, Math.min(127, roundEven(Math.fround(-128 - Math.fround(mn * inv)))));
        for (let t = k0; t < k1; t++) q[j * k + t] = Math.max(-128, Math.min(127, roundEven(Math.fround(w[j * k + t]! * inv)) + zp));
        s[j * groups + g] = sc;
        z[j * groups + g] = zp;
      }
    }
  return { q, s, z, groups };
}

describe('quantize', () => {
  const cases = [
    { n: 7, k: 61, opts: {} },
    { n: 16, k: 256, opts: { granularity: 'per-channel' as const, symmetric: false } },
    { n: 5, k: 100, opts: { granularity: 'per-group' as const, groupSize: 32 } },
    { n: 33, k: 129, opts: { granularity: 'per-group' as const, groupSize: 64 } },
    { n: 3, k: 300, opts: { granularity: 'per-group' as const, groupSize: 128, symmetric: false } },
    { n: 1, k: 1, opts: {} },
  ];
  for (const { n, k, opts } of cases) {
    it(`matches the reference quantizer: [${n}, ${k}] ${JSON.stringify(opts)}`, () => {
      const w = randn(n * k);
      w[0] = 0; // exact zeros stay exact
      const W = Tensor.from(w, [n, k]);
      const qw = quantize(W, opts);
      const symmetric = opts.symmetric ?? true;
      const gs = opts.granularity === 'per-group' ? opts.groupSize : k;
      const ref = refQuant(w, n, k, gs, symmetric);
      expect(qw.shape).to.deep.equal([n, k]);
      expect(qw.groups).to.equal(ref.groups);
      expect(qw.symmetric).to.equal(symmetric);
      expect(qw.values.dtype).to.equal('i8');
      expect(Array.from(qw.scales.toArray())).to.deep.equal(Array.from(ref.s));
      expect(qw.scales.shape).to.deep.equal(ref.groups === 1 ? [n] : [n, ref.groups]);
      const got = qw.values.toArray() as Int8Array;
      let diff = 0;
      for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i]! - ref.q[i]!));
      expect(diff).to.equal(0);
      if (symmetric) {
        expect(qw.zeroPoints).to.equal(null);
        expect(Math.min(...got)).to.be.at.least(-127);
      } else {
        expect(Array.from(qw.zeroPoints!.toArray())).to.deep.equal(Array.from(ref.z));
      }
      // dequantize: |w - w~| <= scale / 2 everywhere
      const dq = qw.dequantize().toArray();
      for (let j = 0; j < n; j++)
        for (let t = 0; t < k; t++) {
          const sc = ref.s[j * ref.groups + Math.floor(t / gs)]!;
          expect(Math.abs(dq[j * k + t]! - w[j * k + t]!)).to.be.at.most(sc * 0.5001);
        }
      expect(dq[0]).to.equal(0);
      W.dispose();
      qw.dispose();
    });
  }

  it('reports error metrics; finer groups lower the error', async () => {
    const n = 64, k = 512;
    const w = randn(n * k);
    for (let i = 0; i < n; i++) w[i * k + (i % k)] = 12; // one outlier per row
    const W = Tensor.from(w, [n, k]);
    const pc = quantize(W), g32 = await quantizeAsync(W, { granularity: 'per-group', groupSize: 32 });
    const e1 = pc.error(W), e2 = g32.error(W);
    expect(e1.sqnr).to.be.above(20).and.below(60);
    expect(e2.sqnr).to.be.above(e1.sqnr + 5);
    expect(e1.maxAbsError).to.be.at.most((12 / 127) * 0.5001);
    expect(e1.relativeError).to.be.closeTo(10 ** (-e1.sqnr / 20), 1e-9);
    const same = quantizationError(W, W);
    expect(same.sqnr).to.equal(Infinity);
    expect(same.mse).to.equal(0);
    W.dispose(); pc.dispose(); g32.dispose();
  });

  it('rejects bad options and inputs', () => {
    const W = Tensor.from(randn(8), [2, 4]);
    expect(() => quantize(W, { granularity: 'per-group', groupSize: 48 })).to.throw(RangeError, /groupSize must be 32, 64 or 128/);
    expect(() => quantize(W, { granularity: 'per-row' as never })).to.throw(TypeError, /granularity/);
    expect(() => quantize(W, { groupSize: 32 })).to.throw(TypeError, /only valid with granularity 'per-group'/);
    expect(() => quantize(Tensor.zeros([4], 'f32'))).to.throw(RangeError, /2 dimensions/);
    expect(() => quantize(Tensor.zeros([2, 2], 'i8'))).to.throw(TypeError, /dtype f32/);
    expect(() => quantize(Tensor.zeros([0, 4]))).to.throw(RangeError, /non-empty/);
    const qw = quantize(W);
    qw.dispose();
    expect(() => qw.dequantize()).to.throw(TypeError, /disposed/);
    expect(() => qw.values).to.throw(TypeError, /disposed/);
    W.dispose();
    expect(() => quantize(W)).to.throw(TypeError, /disposed/);
  });
});

describe('Observer (static activation calibration)', () => {
  function batch(n: number, outlier: number): Tensor {
    const x = randn(n);
    x[7] = outlier;
    return Tensor.from(x);
  }

  it('minmax covers everything observed across batches', async () => {
    const o = new Observer({ method: 'minmax' });
    await o.observe(Tensor.from(Float32Array.from([-1, 0.5, 2])));
    await o.observe(Tensor.from(Float32Array.from([-3, 0.25])));
    const p = o.compute();
    expect(p.scale).to.be.closeTo(3 / 127, 1e-9);
    expect(p.zeroPoint).to.equal(0);
    const a = new Observer({ symmetric: false });
    await a.observe(Tensor.from(Float32Array.from([-1, 0.5, 3])));
    const q = a.compute();
    expect(q.scale).to.be.closeTo(4 / 255, 1e-7);
    expect(q.min).to.be.closeTo(-1, 0.02);
    expect(q.max).to.be.closeTo(3, 0.02);
  });

  it('percentile clips outliers that min-max keeps; MSE picks the range with the lowest error', async () => {
    const mm = new Observer({ method: 'minmax' }), pc = new Observer({ method: 'percentile', percentile: 99.9 });
    const mse = new Observer({ method: 'mse' });
    const all: number[] = [];
    for (let b = 0; b < 3; b++) {
      const t = batch(20000, 40 + b * 10); // wider range each batch: the histogram is re-binned
      all.push(...(t.toArray() as Float32Array));
      await mm.observe(t); await pc.observe(t); await mse.observe(t);
      t.dispose();
    }
    const pmm = mm.compute(), ppc = pc.compute(), pmse = mse.compute();
    expect(pmm.scale * 127).to.be.closeTo(60, 1e-3);
    expect(ppc.scale * 127).to.be.within(2.5, 4.5); // 99.9% of N(0,1) mass lies within |x| < 3.3
    // actual quantize-dequantize error of each choice on the observed data
    const err = (p: { scale: number }) => {
      let e = 0;
      for (const v of all) {
        const q = Math.max(-127, Math.min(127, Math.round(v / p.scale))) * p.scale;
        e += (v - q) ** 2;
      }
      return e / all.length;
    };
    const emm = err(pmm), epc = err(ppc), emse = err(pmse);
    expect(emse).to.be.at.most(Math.min(emm, epc) * 1.05);
  });

  it('paramsFor maps ranges onto int8', () => {
    expect(paramsFor(-2, 1, true)).to.deep.include({ scale: 2 / 127, zeroPoint: 0 });
    const a = paramsFor(0, 255, false);
    expect(a.scale).to.equal(1);
    expect(a.zeroPoint).to.equal(-128);
    expect(() => new Observer({ method: 'kl' as never })).to.throw(TypeError);
    expect(() => new Observer().compute()).to.throw(/observe\(\) at least one batch/);
  });
});
