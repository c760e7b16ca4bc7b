import { expect } from 'chai';
import { Tensor, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../lib/index';

describe('Tensor', () => {
  it('round-trips every dtype through native memory', () => {
    const cases: [ArrayBufferView, string][] = [
      [Float32Array.from([1.5, -2, 3.25, 1e-8, -0, 7]), 'f32'],
      [Int8Array.from([-128, 127, 0, 5, -7, 1]), 'i8'],
      [Uint8Array.from([0, 255, 1, 2, 3, 4]), 'u8'],
      [Int32Array.from([-(2 ** 31), 2 ** 31 - 1, 0, 1, -1, 42]), 'i32'],
    ];
    for (const [data, dtype] of cases) {
      const t = Tensor.from(data, [2, 3]);
      expect(t.dtype).to.equal(dtype);
      expect(t.shape).to.deep.equal([2, 3]);
      expect(Array.from(t.toArray() as ArrayLike<number>)).to.deep.equal(Array.from(data as unknown as ArrayLike<number>));
      t.dispose();
    }
  });

  it('stores f16 and bf16 and decodes them', () => {
    const vals = [1, -2.5, 0.333251953125, 65504, 6.103515625e-5, 0];
    const h = Uint16Array.from(vals.map(f32ToF16));
    const t = Tensor.from(h, [6], 'f16');
    expect(Array.from(t.toArray())).to.deep.equal(vals);
    expect(Array.from(t.data() as Uint16Array)).to.deep.equal(Array.from(h));
    const b = Tensor.from([1, -2, 3.5, 1e30], [4], 'bf16');
    expect(Array.from(b.toArray()).slice(0, 3)).to.deep.equal([1, -2, 3.5]);
    expect(Math.abs(b.toArray()[3]! - 1e30) / 1e30).to.be.below(1 / 128);
    t.dispose();
    b.dispose();
  });

  it('converts f16/bf16 with round-to-nearest-even', () => {
    expect(f16ToF32(f32ToF16(1 + 2 ** -11))).to.equal(1); // tie -> even
    expect(f16ToF32(f32ToF16(1 + 3 * 2 ** -11))).to.equal(1 + 2 ** -9);
    expect(f16ToF32(f32ToF16(1e6))).to.equal(Infinity);
    expect(Number.isNaN(f16ToF32(f32ToF16(NaN)))).to.equal(true);
    expect(bf16ToF32(f32ToBf16(1 + 2 ** -8))).to.equal(1);
    expect(bf16ToF32(f32ToBf16(1 + 3 * 2 ** -8))).to.equal(1 + 2 ** -6);
  });

  it('makes zeros, full and seeded random tensors', () => {
    const z = Tensor.zeros([3, 4], 'i32');
    expect(Array.from(z.toArray())).to.deep.equal(new Array(12).fill(0));
    const f = Tensor.full([2], 2.5);
    expect(Array.from(f.toArray())).to.deep.equal([2.5, 2.5]);
    const r1 = Tensor.rand([100], { seed: 7 }), r2 = Tensor.rand([100], { seed: 7 }), r3 = Tensor.rand([100], { seed: 8 });
    expect(Array.from(r1.toArray())).to.deep.equal(Array.from(r2.toArray()));
    expect(Array.from(r1.toArray())).to.not.deep.equal(Array.from(r3.toArray()));
    const ri = Tensor.rand([1000], { dtype: 'i8', seed: 1 }).toArray();
    expect(Math.min(...ri)).to.be.at.least(-128);
    expect(Math.max(...ri)).to.be.at.most(127);
    expect(new Set(ri).size).to.be.above(200);
    for (const t of [z, f, r1, r2, r3]) t.dispose();
  });

  it('full and rand are written in chunks: past a chunk boundary every element is set, rand continues one sequence', () => {
    const n = (1 << 20) + 5;
    const f = Tensor.full([n], -3, 'i8'), h = Tensor.full([n], 0.5, 'f16');
    expect(new Set(f.toArray()).size).to.equal(1);
    expect(f.toArray()[n - 1]).to.equal(-3);
    expect(h.toArray()[n - 1]).to.equal(0.5);
    const r = Tensor.rand([n], { seed: 11 }).toArray(), head = Tensor.rand([1 << 20], { seed: 11 }).toArray();
    expect(Buffer.from(r.buffer, 0, head.byteLength).equals(Buffer.from(head.buffer))).to.equal(true);
    expect(new Set(r.subarray(1 << 20)).size).to.equal(5);
    expect(Math.min(...r.subarray(1 << 20))).to.be.at.least(-1);
    const g = Tensor.rand([n], { std: 2, seed: 1 }).toArray();
    let ss = 0;
    for (const v of g) ss += v * v;
    expect(Math.sqrt(ss / n)).to.be.closeTo(2, 0.01);
    for (const t of [f, h]) t.dispose();
  });

  it('rand and full check their options; an overridden byteLength does not make data look longer', () => {
    expect(() => Tensor.rand([3], { std: NaN })).to.throw(RangeError, /std must be a finite number/);
    expect(() => Tensor.rand([3], { min: 2, max: 1 })).to.throw(RangeError, /min <= max/);
    expect(() => Tensor.full([2], 1, 'x' as never)).to.throw(TypeError, /Tensor.full: dtype must be one of/);
    expect(() => Tensor.full([2], '1' as never)).to.throw(TypeError, /value must be a number/);
    const a = new Float32Array(4);
    Object.defineProperty(a, 'byteLength', { value: 1 << 20 });
    expect(() => Tensor.from(a, [1 << 18])).to.throw(RangeError, /data has 4/);
  });

  it('slices along dim 0 without copying and reshapes as a view', () => {
    const t = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => i), [4, 3]);
    const s = t.slice(1, 3);
    expect(s.shape).to.deep.equal([2, 3]);
    expect(Array.from(s.toArray())).to.deep.equal([3, 4, 5, 6, 7, 8]);
    const r = t.reshape([2, 6]);
    expect(Array.from(r.slice(1).toArray())).to.deep.equal([6, 7, 8, 9, 10, 11]);
    s.dispose(); // a view's dispose leaves the base alive
    expect(t.toArray().length).to.equal(12);
    t.dispose();
    expect(() => r.toArray()).to.throw(TypeError, /disposed/);
    expect(() => t.slice(0, 5)).to.throw(TypeError, /disposed/);
  });

  it('supports `using` / Symbol.dispose and double dispose', () => {
    const t = Tensor.zeros([2]);
    t[Symbol.dispose]();
    expect(t.disposed).to.equal(true);
    t.dispose();
    expect(() => t.toArray()).to.throw(TypeError, /disposed/);
  });

  it('rejects bad shapes and data with clear errors', () => {
    expect(() => Tensor.from(new Float32Array(6), [4, 2])).to.throw(RangeError, /needs 8 elements; data has 6/);
    expect(() => Tensor.from(new Float32Array(6), [-1, -6])).to.throw(RangeError, /non-negative integers/);
    expect(() => Tensor.from(new Float32Array(6), [2.5, 2])).to.throw(RangeError);
    expect(() => Tensor.zeros([2 ** 30, 2 ** 30])).to.throw(RangeError, /over the limit/);
    expect(() => Tensor.from(new Float64Array(3) as unknown as Float32Array)).to.throw(TypeError, /unsupported array type/);
    expect(() => Tensor.from(new Uint16Array(3))).to.throw(TypeError, /f16' or 'bf16/);
    expect(() => Tensor.from(new Float32Array(3), [3], 'i8')).to.throw(TypeError, /holds f32, not i8/);
    expect(() => Tensor.zeros([2], 'f64' as never)).to.throw(TypeError, /dtype must be one of/);
    expect(() => Tensor.from('abc' as never)).to.throw(TypeError);
    const t = Tensor.zeros([3, 2]);
    expect(() => t.slice(2, 1)).to.throw(RangeError, /start <= end/);
    expect(() => t.reshape([5])).to.throw(RangeError, /cannot view/);
    t.dispose();
  });
});
