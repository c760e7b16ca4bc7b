// Concurrent async ops share the pool safely and all return correct results.
import { expect } from 'chai';
import { Tensor, linear, matmulInt8, quantize } from '../lib/index';
import { randI8, randn, refLinear, refMatmulI8, relErr } from './helpers';

describe('concurrency', function () {
  this.timeout(120000);

  it('64 concurrent linear calls (int8 and f32, different shapes) are all correct', async () => {
    const k = 200, n = 96;
    const w = randn(n * k), W = Tensor.from(w, [n, k]);
    const qw = quantize(W);
    const wq = qw.dequantize().toArray();
    const jobs = Array.from({ length: 64 }, (_, i) => {
      const m = 1 + (i % 13) * 5;
      const x = randn(m * k);
      const X = Tensor.from(x, [m, k]);
      const quant = i % 2 === 0;
      return { m, x, X, quant, p: linear(X, quant ? qw : W) };
    });
    const outs = await Promise.all(jobs.map((j) => j.p));
    jobs.forEach((j, i) => {
      const y = outs[i]!.toArray();
      const ref = refLinear(j.x, j.quant ? wq : w, null, j.m, n, k);
      expect(relErr(y, ref)).to.be.below(j.quant ? 0.03 : 1e-5);
      j.X.dispose();
      outs[i]!.dispose();
    });
    W.dispose(); qw.dispose();
  });

  it('interleaved exact int8 matmuls do not corrupt each other', async () => {
    const cases = Array.from({ length: 24 }, (_, i) => {
      const m = 1 + i * 3, n = 17 + i, k = 33 + 7 * i;
      const a = randI8(m * k), b = randI8(n * k);
      return { m, n, k, a, b, A: Tensor.from(a, [m, k]), B: Tensor.from(b, [n, k]) };
    });
    const outs = await Promise.all(cases.map((c) => matmulInt8(c.A, c.B)));
    cases.forEach((c, i) => {
      expect(Array.from(outs[i]!.toArray())).to.deep.equal(Array.from(refMatmulI8(c.a, c.b, c.m, c.n, c.k)));
    });
  });
});
