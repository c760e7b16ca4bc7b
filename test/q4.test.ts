// 4-bit weights: round-to-nearest packing (two per byte, groups of 32/64/128 with
// a partial last group) and the 4-bit linear on every path against a reference
// computed from the unpacked integers with the same activation quantization.
import { expect } from 'chai';
import { Tensor } from '../lib/index';
import { loadNative } from '../lib/native';
import { describeEachIsa, quantRowsRef, randn, relErr } from './helpers';

describeEachIsa('int4 linear', () => {
  it('m = 1..17, k with partial groups, odd block counts, n over several expanded strips: equal to the integer reference (1e-5)', async () => {
    const nat = loadNative();
    for (const [n, k, group] of [[5, 45, 32], [6, 70, 32], [17, 172, 32], [33, 256, 64], [7, 90, 64], [8, 300, 128], [9, 200, 128], [1, 1, 32], [300, 4000, 32]] as const) {
      const wv = randn(n * k), w = Tensor.from(wv, [n, k]);
      const q4 = await nat.q4Quantize(w._storage, w._offset, n, k, group);
      const { values, scales } = nat.q4Parts(q4);
      const groups = Math.ceil(k / group);
      // round to nearest: each value within half a step of the weight, scales max|w| / 7
      let worst = 0;  // (largest |value| over 7, largest rounding error over half a step): both at most 1
      for (let j = 0; j < n; j++)
        for (let c = 0; c < k; c++) {
          const s = scales[j * groups + Math.floor(c / group)]!;
          worst = Math.max(worst, Math.abs(values[j * k + c]!) / 7, Math.abs(values[j * k + c]! * s - wv[j * k + c]!) / (s / 2 + 1e-6));
        }
      expect(worst, `n=${n} k=${k} group=${group}`).to.be.at.most(1);
      for (const m of [1, 3, 8, 17]) {
        const xv = randn(m * k), x = Tensor.from(xv, [m, k]), out = Tensor._alloc([m, n], 'f32');
        await nat.linearQ4(q4, x._storage, x._offset, m, out._storage, out._offset);
        const X = quantRowsRef(xv, m, k), ref = new Float64Array(m * n);
        for (let i = 0; i < m; i++)
          for (let j = 0; j < n; j++) {
            let acc = 0;
            for (let g = 0; g < groups; g++) {
              let s = 0;
              for (let c = g * group; c < Math.min(k, g * group + group); c++) s += values[j * k + c]! * X.q[i * k + c]!;
              acc += s * scales[j * groups + g]!;
            }
            ref[i * n + j] = acc * X.s[i]!;
          }
        expect(relErr(out.toArray(), ref), `n=${n} k=${k} group=${group} m=${m}`).to.be.below(1e-5);
        [x, out].forEach((t) => t.dispose());
      }
      // packed: half a byte per weight (rows padded to 32) + one f32 scale per group
      expect(q4.meta().bytes).to.equal(n * Math.ceil(k / 32) * 16 + 32 + n * groups * 4);
      q4.dispose();
      w.dispose();
    }
  });

  it('bad input gives clear errors', async () => {
    const nat = loadNative();
    const w = Tensor.from(randn(4 * 64), [4, 64]);
    let err: Error | undefined;
    try { await nat.q4Quantize(w._storage, w._offset, 4, 64, 48); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/group must be 32, 64 or 128/);
    const bytes = new Uint8Array(4 * 32).fill(0x88);
    bytes[5] = 0x08;  // a -8 in the high nibble
    const nib = Tensor.from(bytes, [4, 32], 'u8'), sc = Tensor.from(new Float32Array(8).fill(1), [8]);
    err = undefined;
    const parts = [{ suffix: 'q4', dtype: 'U8', shape: [4, 32], storage: nib._storage, offset: nib._offset, bytes: 128 },
      { suffix: 'scale', dtype: 'F32', shape: [4, 2], storage: sc._storage, offset: sc._offset, bytes: 32 }];
    try { await nat.loadLinear({ kind: 'int4', group: 32 }, 'w', 4, 64, parts); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/outside \[-7, 7\]/);
    w.dispose();
  });
});
