// The linear weight format table (native/model/linear_format.h) as the addon
// exposes it: the rows, each format's f32 values against values computed here
// from its parts, and loading a saved linear through its row (round trips and
// damaged parts: clear errors naming the tensor, never a crash).
import { expect } from 'chai';
import { Tensor } from '../lib/index';
import { loadNative, type NativeLinear, type NativeStorage, type SavedPart } from '../lib/native';
import { randn } from './helpers';

const nat = () => loadNative();

function f32Of(w: Parameters<ReturnType<typeof loadNative>['linearToF32']>[0], n: number, k: number): Float32Array {
  const out = Tensor._alloc([n, k], 'f32');
  nat().linearToF32(w, out._storage, out._offset, true);
  const a = out.toArray() as Float32Array;
  out.dispose();
  return a;
}

/** A part over a fresh storage holding `bytes`. */
function part(suffix: string, dtype: string, shape: number[], bytes: ArrayBufferView, keep: NativeStorage[]): SavedPart {
  const s = new (nat().Storage)(Math.max(bytes.byteLength, 1));
  s.write(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
  keep.push(s);
  return { suffix, dtype, shape, storage: s, offset: 0, bytes: bytes.byteLength };
}

/** The call throws, or its Promise rejects, with an Error matching re. */
async function rejects(call: () => Promise<unknown>, re: RegExp): Promise<void> {
  let err: unknown;
  try {
    await call();
  } catch (e) {
    err = e;
  }
  expect(err, String(re)).to.be.instanceOf(Error);
  expect((err as Error).message).to.match(re);
}

describe('linear format table', () => {
  const keep: NativeStorage[] = [];
  afterEach(() => {
    for (const s of keep.splice(0)) s.dispose();
  });

  it('lists its rows; the formats a saved model converts load natively, the views of the file do not', () => {
    const rows = nat().linearFormats();
    expect(rows.map((r) => r.name)).to.deep.equal(['f32', 'int8', 'int4', 'sparse', 'ggml']);
    expect(rows.filter((r) => r.loads).map((r) => r.name)).to.deep.equal(['int8', 'int4', 'sparse']);
  });

  it('int8 (per channel, groups, asymmetric): to_f32 is (q - zero) x scale of the unpacked parts, its stored bytes are theirs, and a load of them gives the same weight', async () => {
    for (const [n, k, group, asym] of [[1, 1, 0, false], [5, 37, 0, false], [17, 100, 32, false], [9, 70, 64, true], [3, 129, 0, true]] as const) {
      const w = Tensor.from(randn(n * k), [n, k]);
      const p = nat().quantizeWeight(w._storage, w._offset, n, k, group, asym, true);
      const u = p.unpack(), q = new Int8Array(u.values), s = new Float32Array(u.scales), z = new Int32Array(u.zeros);
      const groups = group ? Math.ceil(k / group) : 1;
      const got = f32Of(p, n, k);
      expect(nat().linearStoredBytes(p), 'stored bytes: values, scales (and zeros)').to.equal(n * k + 4 * n * groups * (asym ? 2 : 1));
      for (let j = 0; j < n; j++)
        for (let c = 0; c < k; c++) {
          const g = j * groups + (group ? Math.floor(c / group) : 0);
          expect(got[j * k + c], `n=${n} k=${k} group=${group} [${j}, ${c}]`).to.equal(Math.fround(s[g]! * (q[j * k + c]! - (asym ? z[g]! : 0))));
        }
      const parts = [part('q', 'I8', [n, k], q, keep), part('scale', 'F32', [n, groups], s, keep)];
      if (asym) parts.push(part('zero', 'I32', [n, groups], z, keep));
      const back = await nat().loadLinear({ kind: 'int8', group, asymmetric: asym, actScale: 0 }, 'w', n, k, parts);
      expect(back.meta()).to.include({ format: 'int8', n, k });
      expect(f32Of(back, n, k)).to.deep.equal(got);
      back.dispose();
      p.dispose();
      w.dispose();
    }
  });

  it('int4: to_f32 is value x group scale, and the saved nibbles load back to the same weight', async () => {
    for (const [n, k, group] of [[1, 1, 32], [4, 45, 32], [7, 90, 64], [3, 300, 128]] as const) {
      const w = Tensor.from(randn(n * k), [n, k]);
      const q4 = await nat().q4Quantize(w._storage, w._offset, n, k, group);
      const { nibbles, scales, values } = nat().q4Parts(q4);
      const groups = Math.ceil(k / group), got = f32Of(q4, n, k);
      expect(nat().linearStoredBytes(q4), 'stored bytes: nibbles of whole blocks of 32, scales').to.equal(n * Math.ceil(k / 32) * 16 + 4 * n * groups);
      for (let j = 0; j < n; j++)
        for (let c = 0; c < k; c++) expect(got[j * k + c]).to.equal(Math.fround(values[j * k + c]! * scales[j * groups + Math.floor(c / group)]!));
      const back = await nat().loadLinear({ kind: 'int4', group }, 'w', n, k,
        [part('q4', 'U8', [n, Math.ceil(k / 32) * 16], nibbles, keep), part('scale', 'F32', [n, groups], scales, keep)]);
      expect(f32Of(back, n, k)).to.deep.equal(got);
      [back, q4, w].forEach((x) => x.dispose());
    }
  });

  it('sparse (f32 values): to_f32 is the pruned dense weight exactly', () => {
    const n = 6, k = 70, a = randn(n * k);
    for (let i = 0; i < a.length; i++) if (i % 3) a[i] = 0;
    const w = Tensor.from(a, [n, k]);
    for (const format of ['csr', 'bitmask']) {
      const s = nat().sparseFromDense(w._storage, w._offset, n, k, format, 0, 0, false, true);
      expect(f32Of(s, n, k)).to.deep.equal(a);
      s.dispose();
    }
    w.dispose();
  });

  it('damaged or unknown saved linears are errors naming the tensor', async () => {
    const n = 2, k = 40;
    const q = new Int8Array(n * k).fill(3), s = new Float32Array(n).fill(0.5);
    const good = () => [part('q', 'I8', [n, k], q, keep), part('scale', 'F32', [n, 1], s, keep)];
    await rejects(() => nat().loadLinear({ kind: 'int3' }, 'layers.0.wq', n, k, good()), /layers\.0\.wq: unknown kind 'int3'/);
    await rejects(() => nat().loadLinear({ kind: 'f32' }, 'layers.0.wq', n, k, good()), /unknown kind 'f32'/);
    await rejects(() => nat().loadLinear({ kind: 'int8' }, 'layers.0.wq', n, k, [good()[0]!]), /tensor layers\.0\.wq\.scale is missing/);
    await rejects(() => nat().loadLinear({ kind: 'int8' }, 'wo', n, k, [part('q', 'U8', [n, k], q, keep), good()[1]!]), /tensor wo\.q is U8 \[2, 40\], expected I8 \[2, 40\]/);
    await rejects(() => nat().loadLinear({ kind: 'int8' }, 'wo', n, k, [part('q', 'I8', [n, k - 1], q.subarray(1), keep), good()[1]!]), /tensor wo\.q is I8 \[2, 39\]/);
    await rejects(() => nat().loadLinear({ kind: 'int8', group: 7.5 }, 'wo', n, k, good()), /wo: bad group/);
    await rejects(() => nat().loadLinear({ kind: 'int8', group: 41 }, 'wo', n, k, good()), /wo: bad group/);
    await rejects(() => nat().loadLinear({ kind: 'int8', actScale: -1 }, 'wo', n, k, good()), /bad activation scale/);
    await rejects(() => nat().loadLinear({ kind: 'int8' }, 'wo', n, k, [good()[0]!, part('scale', 'F32', [n, 1], new Float32Array([1, NaN]), keep)]), /scales must be finite/);
    const short = good();
    short[0]!.bytes = n * k - 1;  // a header that promises more than the tensor holds
    await rejects(() => nat().loadLinear({ kind: 'int8' }, 'wo', n, k, short), /tensor wo\.q has 79 bytes/);
    const outside = good();
    outside[0]!.offset = 8;  // past the end of its storage
    await rejects(() => nat().loadLinear({ kind: 'int8' }, 'wo', n, k, outside), /outside its storage/);
    await rejects(() => nat().loadLinear({ kind: 'int4', group: 48 }, 'w2', n, k, good()), /w2: bad group 48/);
    await rejects(() => nat().loadLinear({ kind: 'int4', group: 32 }, 'w2', n, k, [part('q4', 'U8', [n, 32], new Uint8Array(64), keep), part('scale', 'F32', [n, 2], new Float32Array(4).fill(1), keep)]),
      /w2: .*outside \[-7, 7\]/);  // nibble 0 is -8
    await rejects(() => nat().loadLinear({ kind: 'sparse', format: 'coo', nnz: 0 }, 'w1', n, k, []), /w1: bad sparse entry/);
    await rejects(() => nat().loadLinear({ kind: 'sparse', format: 'csr', nnz: 1, int8: false }, 'w1', n, k, [part('values', 'F32', [1], new Float32Array(1), keep)]),
      /tensor w1\.row_ptr is missing/);
  });

  it('a disposed Linear is refused, twice disposed is harmless, and a non-weight is a TypeError', async () => {
    const n = 2, k = 40;
    const w = await nat().loadLinear({ kind: 'int8' }, 'w', n, k, [part('q', 'I8', [n, k], new Int8Array(n * k), keep), part('scale', 'F32', [n, 1], new Float32Array(n), keep)]);
    w.dispose();
    w.dispose();  // twice is harmless
    expect(() => (w as NativeLinear).meta()).to.throw(/disposed/);
    const out = Tensor._alloc([n, k], 'f32');
    expect(() => nat().linearToF32(w, out._storage, out._offset, true)).to.throw(/disposed/);
    expect(() => nat().linearToF32({} as NativeLinear, out._storage, out._offset, true)).to.throw(TypeError, /expected a weight/);
    out.dispose();
  });
});
