// Misuse never crashes the process: every bad call is a clear TypeError/RangeError.
import { expect } from 'chai';
import { Tensor, attention, linear, loadModel, matmul, matmulInt8, prune, pruneRows, quantize, rmsnorm, rope, setIsa, setNumThreads } from '../lib/index';
import { loadNative } from '../lib/native';

async function rejects(p: Promise<unknown>, type: ErrorConstructor, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(type);
    expect((e as Error).message).to.match(re);
    return;
  }
  expect.fail(`expected a rejection matching ${re}`);
}

describe('bad input', () => {
  const f = (s: number[]) => Tensor.zeros(s, 'f32');
  const i8 = (s: number[]) => Tensor.zeros(s, 'i8');

  it('wrong dtypes name the op and argument', async () => {
    await rejects(matmulInt8(f([2, 3]), i8([4, 3])), TypeError, /matmulInt8: argument 'a' must have dtype i8; got f32/);
    await rejects(matmulInt8(i8([2, 3]), Tensor.zeros([4, 3], 'u8')), TypeError, /argument 'b' must have dtype i8; got u8/);
    await rejects(linear(i8([2, 3]), f([4, 3])), TypeError, /linear: argument 'x' must have dtype f32; got i8/);
    await rejects(matmul(f([2, 3]), Tensor.zeros([3, 2], 'i32')), TypeError, /matmul: argument 'b'/);
    await rejects(linear(f([2, 3]), f([4, 3]), Tensor.zeros([4], 'f16')), TypeError, /argument 'bias'/);
  });

  it('mismatched shapes', async () => {
    await rejects(matmulInt8(i8([2, 3]), i8([4, 5])), RangeError, /b.shape\[1\] \(k of a: \[2, 3\]\) must be 3; got 5/);
    await rejects(linear(f([2, 3]), f([4, 5])), RangeError, /w.shape\[1\]/);
    await rejects(linear(f([2, 3]), f([4, 3]), f([5])), RangeError, /bias length/);
    await rejects(matmul(f([2, 3]), f([2, 3])), RangeError, /b.shape\[0\]/);
    await rejects(matmul(f([2, 3, 4]), f([4, 3])), RangeError, /2 dimensions/);
    await rejects(matmulInt8(i8([1, 131072]), i8([1, 131072])), RangeError, /k must be at most 131071 for exact int32 sums; got 131072/);
    const wide = quantize(f([2, 131073]));  // one group per row of 131073 values
    await rejects(linear(f([1, 131073]), wide), RangeError, /a scale group of 131073 values could overflow the exact int32 sums/);
    wide.dispose();
    await rejects(linear(f([0, 3]), f([4, 3])), RangeError, /empty/);
    const qw = quantize(f([4, 3]));
    await rejects(linear(f([2, 5]), qw), RangeError, /w.shape\[1\]/);
    await rejects(linear(f([2, 3]), qw, null, { inputScale: -1 }), RangeError, /inputScale must be a positive/);
    await rejects(linear(f([2, 3]), f([4, 3]), null, { inputScale: 1 }), TypeError, /quantized weights only/);
    qw.dispose();
  });

  it('wrong argument types', async () => {
    await rejects(matmulInt8([1, 2] as never, i8([1, 2])), TypeError, /got an array/);
    await rejects(linear(f([1, 2]), null as never), TypeError, /'w' must be an f32 Tensor, a QuantizedTensor or a SparseTensor; got null/);
    await rejects(matmul(f([1, 2]), new Float32Array(2) as never), TypeError, /got a Float32Array/);
    expect(() => setNumThreads(0)).to.throw(RangeError);
    expect(() => setNumThreads(2.5)).to.throw(RangeError);
    expect(() => setIsa('sse' as never)).to.throw(RangeError, /isa must be one of/);
  });

  it('options that are not objects (null, a number) are TypeErrors naming the op', async () => {
    const x = f([2, 4]), w = f([3, 4]), q4 = Tensor.zeros([1, 2, 3, 4]);
    await rejects(linear(x, w, null, null as never), TypeError, /linear: options must be an object; got null/);
    await rejects(rmsnorm(x, f([4]), 5 as never), TypeError, /rmsnorm: options must be an object; got number 5/);
    await rejects(rope(q4, null as never), TypeError, /rope: options must be an object/);
    await rejects(attention(q4, q4, q4, null as never), TypeError, /attention: options must be an object/);
    expect(() => prune(w, null as never)).to.throw(TypeError, /prune: options must be an object/);
    expect(() => pruneRows(w, null as never)).to.throw(TypeError, /pruneRows: options must be an object/);
    expect(() => Tensor.rand([2], null as never)).to.throw(TypeError, /Tensor.rand: options must be an object/);
    await rejects(loadModel('x', null as never), TypeError, /loadModel: options must be an object/);
    [x, w, q4].forEach((t) => t.dispose());
  });

  it('disposed tensors and weights', async () => {
    const a = i8([2, 3]);
    a.dispose();
    await rejects(matmulInt8(a, i8([2, 3])), TypeError, /argument 'a' has been disposed/);
    const qw = quantize(f([2, 3]));
    qw.dispose();
    await rejects(linear(f([1, 3]), qw), TypeError, /disposed/);
  });

  it('negative, fractional and huge dims', () => {
    expect(() => Tensor.zeros([-3, 2])).to.throw(RangeError);
    expect(() => Tensor.zeros([1e15, 1e15])).to.throw(RangeError, /over the limit/);
    expect(() => Tensor.zeros([NaN])).to.throw(RangeError);
    expect(() => Tensor.zeros([2 ** 39, 2])).to.throw(RangeError); // 2^40 elements of 4 bytes: refused by native alloc
  });

  it('disposing an input while an op runs is safe', async () => {
    const x = Tensor.rand([64, 512]), w = Tensor.rand([512, 512]);
    const p = linear(x, w);
    x.dispose();
    w.dispose();
    const y = await p;
    expect(y.shape).to.deep.equal([64, 512]);
    y.dispose();
  });
});

describe('the addon checks spans itself (calls that bypass the TS layer)', () => {
  it('refuses spans past the storage and absurd dims without touching memory', async () => {
    const N = loadNative();
    const s = new N.Storage(64), o = new N.Storage(64);
    expect(() => N.matmulF32(s, 0, 4, 4, s, 0, 4, null, 0, o, 32)).to.throw(RangeError, /out needs 64 bytes at offset 32/);
    expect(() => N.matmulF32(s, 0, 2 ** 31, 2 ** 31, s, 0, 4, null, 0, o, 0)).to.throw(RangeError, /m must be an integer in/);
    expect(() => N.linearF32(s, 0, 2 ** 30, 2 ** 30, s, 0, 2 ** 30, null, 0, o, 0)).to.throw(RangeError, /needs \d+ bytes/);
    // three dims of 2^30, 2^30, 4 floats: 2^64 bytes, which a plain uint64 product wraps to 0
    expect(() => N.rope(s, 0, 2 ** 30, 2 ** 30, 4, 0, 1e4, false, o, 0)).to.throw(RangeError, /rope: sizes too large/);
    expect(() => N.rope(s, 0, 4, 2 ** 30, 2 ** 30, 0, 1e4, false, o, 0)).to.throw(RangeError, /rope: sizes too large/);
    expect(() => N.matmulS8(s, 0, 1, 1, {} as never, o, 0)).to.throw(TypeError, /expected a quantized weight/);
    expect(() => N.stats({} as never, 0, 1, 0, 0, 0)).to.throw(TypeError, /expected a tensor storage/);
    s.dispose();
    expect(() => N.stats(s, 0, 1, 0, 0, 0)).to.throw(Error, /disposed/);
    o.dispose();
  });

  it('meta() survives a setter that disposes the object while it fills the answer', () => {
    const N = loadNative();
    const w = new N.Storage(64 * 64 * 4);
    const sp = N.sparseFromDense(w, 0, 64, 64, 'bitmask', 0, 0, true, true);
    const q = N.quantizeWeight(w, 0, 64, 64, 0, false, true);
    let calls = 0;
    for (const [obj, key] of [[sp, 'nnz'], [q, 'groups']] as const) {
      Object.defineProperty(Object.prototype, key, { configurable: true, set() { calls++; obj.dispose(); } });
      try {
        const m = obj.meta() as Record<string, unknown>;
        expect(m.bytes).to.be.a('number');  // read after the dispose, from what the call holds
      } finally {
        delete (Object.prototype as Record<string, unknown>)[key];
      }
      expect(() => obj.meta()).to.throw(/has been disposed/);
    }
    expect(calls).to.equal(2);
    w.dispose();
  });

  it('bindings with an options object name the field that is wrong', () => {
    const N = loadNative();
    const s = new N.Storage(4096), o = new N.Storage(64);
    const args = {
      q: s, qOff: 0, b: 1, hq: 1, tq: 1, d: 4, hkv: 1, tk: 2, cap: 2, kvType: 0, k: s, kOff: 0, v: s, vOff: 0,
      ks: null, ksOff: 0, vs: null, vsOff: 0, mask: null, maskOff: 0, maskSb: 0, maskSh: 0, scale: 1, causal: false, out: o, outOff: 0, naive: false,
    };
    expect(() => N.attention(5 as never)).to.throw(TypeError, /attention: expected an options object/);
    expect(() => N.attention({ ...args, hq: undefined } as never)).to.throw(TypeError, /attention: hq must be a number/);
    expect(() => N.attention({ ...args, cap: 1 })).to.throw(RangeError, /attention: cap must be an integer in \[2,/);
    expect(() => N.attention({ ...args, naive: true, outOff: 56 })).to.throw(RangeError, /attentionNaive: out needs 16 bytes at offset 56/);
    expect(() => N.attention({ ...args, kvType: 2 })).to.throw(TypeError, /attention: ks: expected a tensor storage/);
    expect(() => N.attention({ ...args, hq: 2, mask: s, maskSh: 2 ** 61 })).to.throw(RangeError, /mask strides too large/);
    expect(() => N.kvStore({ src: s, srcOff: 0, b: 1, h: 1, t: 2, d: 4, type: 1, dst: o, dstOff: 0, scales: null, scalesOff: 0, cap: 4, pos: 3 }))
      .to.throw(RangeError, /kvStore: 2 new positions at 3 exceed the capacity 4/);
    expect(() => N.kvStore({ src: s, srcOff: 0, b: 1, h: 1, t: 2, d: 4, type: 1, dst: o, dstOff: 40, scales: null, scalesOff: 0, cap: 4, pos: 0 }))
      .to.throw(RangeError, /kvStore: dst needs 32 bytes at offset 40/);
    s.dispose();
    o.dispose();
  });
});
