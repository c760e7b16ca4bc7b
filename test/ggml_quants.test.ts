// GGUF block formats (Q4_0 .. Q6_K, IQ4_NL / IQ4_XS): the native table's sizes,
// its dequantizer against one written from the format specification (exactly
// equal, on random blocks with zero, tiny and extreme scales), the quantizers'
// round trip, and the block linear on every path against float64 products of
// the dequantized weights with the activations as the contract quantizes them
// (per block of 32, int8), at decode and prefill sizes.
import { expect } from 'chai';
import { Tensor } from '../lib/index';
import { loadNative, type NativeStorage } from '../lib/native';

const bytesOf = (s: NativeStorage) => new Uint8Array(s.read(0, s.byteLength));
import { HALF_FIELDS, SPEC, actBlock, dequantize, quantBlocks } from './ggml_ref';
import { describeEachIsa, randn, relErr, random } from './helpers';

const TYPES = Object.keys(SPEC).map(Number);
const nat = () => loadNative();

function storageOf(bytes: Uint8Array): Tensor {
  return Tensor.from(bytes, [bytes.length], 'u8');
}

/** random blocks: random bytes, with each f16 scale field one of `halves` (zero, tiny, ordinary, the largest finite half) */
function randomBlocks(type: number, blocks: number): Uint8Array {
  const { bytes } = SPEC[type]!;
  const b = new Uint8Array(blocks * bytes);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(random() * 256);
  const halves = [0x0000, 0x8000, 0x0001, 0x3c00, 0x2e66, 0xb555, 0x7bff, 0xfbff, 0x1400];
  for (let i = 0; i < blocks; i++)
    for (const o of HALF_FIELDS[type]!) {
      const h = halves[Math.floor(random() * halves.length)]!;
      b[i * bytes + o] = h & 255;
      b[i * bytes + o + 1] = h >> 8;
    }
  return b;
}

async function widen(bytes: Uint8Array, type: number, count: number): Promise<Float32Array> {
  const t = storageOf(bytes);
  const s = await nat().widenToF32(t._storage, t._offset, type, count);
  t.dispose();
  const out = new Float32Array(s.read(0, s.byteLength));
  s.dispose();
  return out;
}

describe('GGUF block formats', () => {
  it('the native table lists every type with ggml block sizes', () => {
    const table = new Map(nat().ggmlTypes().map((t) => [t.type, t]));
    for (const t of TYPES) {
      const row = table.get(t);
      expect(row, SPEC[t]!.name).to.not.equal(undefined);
      expect([row!.name, row!.block, row!.bytes, row!.quantized]).to.deep.equal([SPEC[t]!.name, SPEC[t]!.block, SPEC[t]!.bytes, true]);
    }
    for (const [t, name, bytes] of [[0, 'F32', 4], [1, 'F16', 2], [30, 'BF16', 2]] as const) {
      expect([table.get(t)?.name, table.get(t)?.bytes, table.get(t)?.quantized]).to.deep.equal([name, bytes, false]);
    }
  });

  it('dequantizes random blocks exactly as the format specification does (zero, subnormal, extreme and negative scales)', async () => {
    for (const type of TYPES) {
      const blocks = 37, { block } = SPEC[type]!;
      const b = randomBlocks(type, blocks);
      const got = await widen(b, type, blocks * block), want = dequantize(type, b, blocks);
      let bad = -1;
      for (let i = 0; i < want.length && bad < 0; i++) if (!Object.is(got[i]! + 0, want[i]! + 0) && !(Number.isNaN(got[i]!) && Number.isNaN(want[i]!))) bad = i;
      expect(bad, `${SPEC[type]!.name}: value ${bad}: ${got[bad]} vs ${want[bad]}`).to.equal(-1);
    }
  });

  it('quantizes f32 rows into blocks that decode close to them (and to exactly what the reference decodes)', async () => {
    // relative RMS error of ggml's quantizers on Gaussian values with an outlier of 40: ~1.4-1.5x the largest
    // seen over many runs (SPARQ_PRINT=1 prints them; e.g. Q2_K 0.24-0.25, Q4_K 0.08-0.09, IQ4_XS 0.09-0.11);
    // a sanity bound on the quantizers, not an exactness check (that is test/ggml_llamacpp.test.ts)
    const bound: Record<string, number> = process.env.SPARQ_PRINT ? {} : { Q4_0: 0.17, Q4_1: 0.14, Q5_0: 0.11, Q5_1: 0.07, Q8_0: 0.015, Q2_K: 0.38, Q3_K: 0.2, Q4_K: 0.14, Q5_K: 0.07, Q6_K: 0.04, IQ4_NL: 0.15, IQ4_XS: 0.16 };
    for (const type of TYPES) {
      const n = 5, k = 512, w = randn(n * k);
      w[3] = 0; w.fill(0, 256, 512);  // a zero block / super-block
      w[700] = 40;  // an outlier
      const wt = Tensor.from(w, [n, k]);
      const s = await nat().ggmlQuantize(wt._storage, wt._offset, type, n, k);
      const bytes = bytesOf(s);
      expect(bytes.length, SPEC[type]!.name).to.equal((n * k / SPEC[type]!.block) * SPEC[type]!.bytes);
      const deq = dequantize(type, bytes, (n * k) / SPEC[type]!.block);
      expect(Array.from(await widen(bytes, type, n * k))).to.deep.equal(Array.from(deq));
      for (let i = 256; i < 512; i++) expect(deq[i], `${SPEC[type]!.name} zero block`).to.equal(0);
      if (process.env.SPARQ_PRINT) console.log(SPEC[type]!.name, relErr(deq, w).toFixed(4));
      expect(relErr(deq, w), SPEC[type]!.name).to.be.below(bound[SPEC[type]!.name] ?? Infinity);
      s.dispose();
      wt.dispose();
    }
  });

  it('refuses unknown types, partial blocks and absurd sizes with clear errors', async () => {
    const t = Tensor.from(new Float32Array(64), [64]);
    const errOf = async (f: () => Promise<unknown>) => { try { await f(); } catch (e) { return (e as Error).message; } return ''; };
    expect(await errOf(() => nat().widenToF32(t._storage, t._offset, 99, 32))).to.match(/type 99 is not one sparq reads/);
    expect(await errOf(() => nat().widenToF32(t._storage, t._offset, 12, 64))).to.match(/Q4_K needs a multiple of 256/);
    expect(await errOf(() => nat().ggmlQuantize(t._storage, t._offset, 12, 1, 64))).to.match(/multiple of 256/);
    expect(await errOf(() => nat().ggmlQuantize(t._storage, t._offset, 1, 1, 64))).to.match(/F16 is not one sparq quantizes/);
    expect(await errOf(() => nat().widenToF32(t._storage, t._offset, 8, 1024))).to.match(/needs|bytes/);  // storage too small
    expect(await errOf(() => nat().linearBlocks(t._storage, t._offset, 2, 100, 32, t._storage, t._offset, 1, t._storage, t._offset))).to.match(/bytes/);
    t.dispose();
  });
});

describeEachIsa('GGUF block linear', () => {
  it('decode (m <= 8: GEMV) and prefill (m > 8: int8 GEMM over expanded strips, many strips) equal float64 products with int8 activations per block of 32; tails in n and k', async () => {
    for (const type of TYPES) {
      const { block, bytes, name } = SPEC[type]!;
      for (const [n, kb] of [[1, 1], [17, 3], [33, 2], [5, 9], [70, 2]] as const) {
        const k = kb * block;
        const raw = new Uint8Array(n * (k / block) * bytes);
        // quantized from Gaussian values (realistic scales), then one random block per row (extreme codes)
        const wt = Tensor.from(randn(n * k), [n, k]);
        const s = await nat().ggmlQuantize(wt._storage, wt._offset, type, n, k);
        raw.set(bytesOf(s));
        s.dispose();
        wt.dispose();
        const rb = randomBlocks(type, n);
        for (let j = 0; j < n; j++) {
          for (const o of HALF_FIELDS[type]!) { rb[j * bytes + o] = 0x00; rb[j * bytes + o + 1] = 0x2c; }  // scale 1/16: values stay in range
          raw.set(rb.subarray(j * bytes, (j + 1) * bytes), (j * (k / block) + (j % (k / block))) * bytes);
        }
        const W = dequantize(type, raw, n * (k / block));
        const wst = storageOf(raw);
        for (const m of [1, 2, 3, 5, 8, 9, 17]) {
          const xv = randn(m * k), x = Tensor.from(xv, [m, k]), out = Tensor._alloc([m, n], 'f32');
          await nat().linearBlocks(wst._storage, wst._offset, type, n, k, x._storage, x._offset, m, out._storage, out._offset);
          // decode (m <= 8, the GEMV) and prefill (the int8 GEMM over expanded strips) share the contract
          // each output within 2e-5 of the magnitude of its terms (f32 sums in any order; a
          // relative bound on the result alone fails where the terms cancel)
          const B = actBlock(type), X = quantBlocks(xv, m, k, B), got = out.toArray();
          let worst = 0;
          for (let i = 0; i < m; i++)
            for (let j = 0; j < n; j++) {
              let acc = 0, mag = 0;
              for (let c = 0; c < k; c++) {
                const p = W[j * k + c]! * X.q[i * k + c]! * X.d[Math.floor((i * k + c) / B)]!;
                acc += p;
                mag += Math.abs(p);
              }
              worst = Math.max(worst, Math.abs(got[i * n + j]! - acc) / (mag + 1e-30));
            }
          expect(worst, `${name} n=${n} k=${k} m=${m}`).to.be.below(2e-5);
          [x, out].forEach((t) => t.dispose());
        }
        wst.dispose();
      }
    }
  });
});
