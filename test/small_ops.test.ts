// RMSNorm, RoPE, SwiGLU, softmax and add on every path this machine runs,
// against f64 references computed here.
import { expect } from 'chai';
import { Tensor, add, rmsnorm, rope, softmax, swiglu } from '../lib/index';
import { Sampler } from '../lib/model/sampler';
import { loadNative } from '../lib/native';
import { describeEachIsa, randn, relErr } from './helpers';

function refRope(x: Float32Array, bh: number, t: number, d: number, offset: number, theta: number, neox: boolean): Float64Array {
  const y = Float64Array.from(x);
  const half = Math.floor(d / 2);
  for (let r = 0; r < bh * t; r++) {
    const pos = offset + (r % t);
    for (let i = 0; i < half; i++) {
      const ang = pos * Math.pow(theta, (-2 * i) / d);
      const [ia, ib] = neox ? [i, i + half] : [2 * i, 2 * i + 1];
      const a = x[r * d + ia]!, b = x[r * d + ib]!;
      y[r * d + ia] = a * Math.cos(ang) - b * Math.sin(ang);
      y[r * d + ib] = a * Math.sin(ang) + b * Math.cos(ang);
    }
  }
  return y;
}

function refArgmax(x: Float32Array): number {
  let best = 0;
  for (let i = 0; i < x.length; i++) {
    if (Number.isNaN(x[i]!) || x[i] === Infinity) return -1 - i;
    if (x[i]! > x[best]!) best = i;
  }
  return best;
}

describeEachIsa('small ops', () => {

  it("the greedy sampler's native argmax: the first of equal maxima, -1 - i for the first NaN / +inf", () => {
    const native = loadNative();
    for (const n of [1, 2, 7, 8, 9, 15, 16, 17, 31999, 32000, 100003]) {
      for (let trial = 0; trial < 6; trial++) {
        const x = randn(n, 5);
        const at = (k: number) => Math.floor(((k + 1) * 7919 * (trial + 1)) % n);
        if (trial === 1) { const m = 50; for (let k = 0; k < 4; k++) x[at(k)] = m; }  // ties: the lowest index
        if (trial === 2) x.fill(-Infinity);                                       // all -inf: 0
        if (trial === 3) { x[at(0)] = NaN; x[at(1)] = Infinity; }                 // the first bad one
        if (trial === 4) { x.fill(0); x[at(0)] = -0; x[at(1)] = -0; }            // -0 and +0 equal
        if (trial === 5) { x[at(0)] = -Infinity; x[n - 1] = 99; }                 // the last element (a tail)
        expect(native.argmax(x), `n=${n} trial ${trial}`).to.equal(refArgmax(x));
      }
    }
    expect(() => native.argmax(new Float64Array(4) as unknown as Float32Array)).to.throw(TypeError, /Float32Array/);
    const s = new Sampler({});
    expect(() => s.sample(Float32Array.from([1, NaN, 2]))).to.throw(RangeError, /token 1/);
    expect(s.sample(Float32Array.from([1, 3, 3, 2]))).to.equal(1);
  });

  it('rmsnorm within 1e-5 of f64', async () => {
    for (const [rows, d] of [[1, 1], [3, 7], [5, 64], [2, 4099], [17, 288]] as const) {
      const x = randn(rows * d, 3), w = randn(d);
      const y = (await rmsnorm(Tensor.from(x, [rows, d]), Tensor.from(w), { eps: 1e-6 })).toArray();
      const ref = new Float64Array(rows * d);
      for (let r = 0; r < rows; r++) {
        let ss = 0;
        for (let i = 0; i < d; i++) ss += x[r * d + i]! ** 2;
        const inv = 1 / Math.sqrt(ss / d + 1e-6);
        for (let i = 0; i < d; i++) ref[r * d + i] = x[r * d + i]! * inv * w[i]!;
      }
      expect(relErr(y, ref)).to.be.below(1e-5, `rows=${rows} d=${d}`);
    }
  });

  it('softmax within 1e-5 of f64, NaN-free on large magnitudes', async () => {
    for (const [rows, n, scale] of [[1, 1, 1], [3, 7, 1], [4, 1000, 3], [2, 16384, 1], [3, 37, 1e4]] as const) {
      const x = randn(rows * n, scale);
      const y = (await softmax(Tensor.from(x, [rows, n]))).toArray();
      const ref = new Float64Array(rows * n);
      for (let r = 0; r < rows; r++) {
        let mx = -Infinity, sum = 0;
        for (let i = 0; i < n; i++) mx = Math.max(mx, x[r * n + i]!);
        for (let i = 0; i < n; i++) sum += Math.exp(x[r * n + i]! - mx);
        for (let i = 0; i < n; i++) ref[r * n + i] = Math.exp(x[r * n + i]! - mx) / sum;
      }
      expect(y.every((v) => Number.isFinite(v))).to.equal(true);
      expect(relErr(y, ref)).to.be.below(1e-5, `rows=${rows} n=${n} scale=${scale}`);
    }
  });

  it('swiglu and add within 1e-5 of f64 (tails, large |a|)', async () => {
    for (const n of [1, 7, 8, 33, 100003]) {
      const a = randn(n, 4), b = randn(n);
      if (n > 8) { a[3] = 60; a[4] = -60; a[5] = 0; }
      const A = Tensor.from(a), B = Tensor.from(b);
      const s = (await swiglu(A, B)).toArray(), p = (await add(A, B)).toArray();
      const rs = new Float64Array(n), rp = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        rs[i] = (a[i]! / (1 + Math.exp(-a[i]!))) * b[i]!;
        rp[i] = a[i]! + b[i]!;
      }
      expect(relErr(s, rs)).to.be.below(1e-5, `swiglu n=${n}`);
      expect(relErr(p, rp)).to.be.below(1e-6, `add n=${n}`);
    }
  });

  it('rope (interleaved and neox, offsets, odd d) within 1e-5 of f64', async () => {
    for (const [shape, offset, theta, layout] of [
      [[1, 1, 1, 2], 0, 10000, 'interleaved'], [[2, 3, 5, 64], 7, 10000, 'interleaved'],
      [[1, 2, 4, 3], 1, 10000, 'interleaved'], [[3, 1, 128], 100, 500000, 'neox'], [[2, 9, 80], 4095, 10000, 'neox'],
    ] as const) {
      const n = (shape as readonly number[]).reduce((p, q) => p * q, 1);
      const [t, d] = shape.slice(-2) as [number, number];
      const x = randn(n);
      const y = (await rope(Tensor.from(x, [...shape]), { offset, theta, layout })).toArray();
      expect(relErr(y, refRope(x, n / (t * d), t, d, offset, theta, layout === 'neox'))).to.be.below(1e-5, `${shape} ${layout}`);
    }
  });
});

describe('small ops: bad input', () => {
  it('names the op and the argument', async () => {
    const f = (s: number[]) => Tensor.zeros(s);
    const fails = async (p: Promise<unknown>, re: RegExp) => {
      try { await p; } catch (e) { expect((e as Error).message).to.match(re); return; }
      expect.fail(`expected ${re}`);
    };
    await fails(rmsnorm(f([2, 3]), f([4])), /rmsnorm: weight length .* must be 3; got 4/);
    await fails(rmsnorm(Tensor.zeros([2, 3], 'i8'), f([3])), /rmsnorm: argument 'x' must have dtype f32/);
    await fails(rmsnorm(f([2, 3]), f([3]), { eps: -1 }), /eps must be/);
    await fails(swiglu(f([2, 3]), f([3, 2])), /swiglu: shapes must match/);
    await fails(add(f([2]), Tensor.zeros([2], 'f16')), /add: argument 'b' must have dtype f32/);
    await fails(rope(f([4]), {}), /rope: x must have shape \[\.\.\., t, d\]/);
    await fails(rope(f([2, 4]), { layout: 'gptj' as never }), /layout must be/);
    await fails(rope(f([2, 4]), { offset: -1 }), /offset must be/);
    await fails(softmax(f([0, 3])), /softmax: argument 'x' is empty/);
  });
});
