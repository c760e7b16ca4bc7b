// ggml_ref.ts - the GGUF block formats dequantized from their specification
// (ggml-common.h block layouts, ggml-quants.c dequantize_row_* arithmetic), in
// f32 steps: an independent reference for sparq's native table.
import { roundEven } from './helpers';

const f = Math.fround;

export function f16(b: Uint8Array, o: number): number {
  const h = b[o]! | (b[o + 1]! << 8);
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 31) return m ? NaN : s * Infinity;
  return e ? s * 2 ** (e - 15) * (1 + m / 1024) : s * 2 ** -14 * (m / 1024);
}

const IQ4 = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** block elements and bytes of each type, by ggml id */
export const SPEC: Record<number, { name: string; block: number; bytes: number }> = {
  2: { name: 'Q4_0', block: 32, bytes: 18 }, 3: { name: 'Q4_1', block: 32, bytes: 20 }, 6: { name: 'Q5_0', block: 32, bytes: 22 },
  7: { name: 'Q5_1', block: 32, bytes: 24 }, 8: { name: 'Q8_0', block: 32, bytes: 34 }, 10: { name: 'Q2_K', block: 256, bytes: 84 },
  11: { name: 'Q3_K', block: 256, bytes: 110 }, 12: { name: 'Q4_K', block: 256, bytes: 144 }, 13: { name: 'Q5_K', block: 256, bytes: 176 },
  14: { name: 'Q6_K', block: 256, bytes: 210 }, 20: { name: 'IQ4_NL', block: 32, bytes: 18 }, 23: { name: 'IQ4_XS', block: 256, bytes: 136 },
};

/** byte offsets of the f16 scale fields of a block (set to chosen values by the tests) */
export const HALF_FIELDS: Record<number, number[]> = {
  2: [0], 3: [0, 2], 6: [0], 7: [0, 2], 8: [0], 10: [80, 82], 11: [108], 12: [0, 2], 13: [0, 2], 14: [208], 20: [0], 23: [0],
};

function kScaleMin(j: number, s: Uint8Array, o: number): [number, number] {
  if (j < 4) return [s[o + j]! & 63, s[o + j + 4]! & 63];
  return [(s[o + j + 4]! & 0xf) | ((s[o + j - 4]! >> 6) << 4), (s[o + j + 4]! >> 4) | ((s[o + j]! >> 6) << 4)];
}

/** Dequantizes `blocks` blocks of `type` starting at byte `o`. */
export function dequantize(type: number, b: Uint8Array, blocks: number, o = 0): Float32Array {
  const { block, bytes } = SPEC[type]!;
  const y = new Float32Array(blocks * block);
  for (let i = 0; i < blocks; i++) {
    const p = o + i * bytes, out = i * block;
    switch (type) {
      case 2: case 20: {  // Q4_0, IQ4_NL
        const d = f16(b, p);
        for (let j = 0; j < 16; j++) {
          const lo = b[p + 2 + j]! & 15, hi = b[p + 2 + j]! >> 4;
          y[out + j] = f(d * (type === 2 ? lo - 8 : IQ4[lo]!));
          y[out + j + 16] = f(d * (type === 2 ? hi - 8 : IQ4[hi]!));
        }
        break;
      }
      case 3: {
        const d = f16(b, p), m = f16(b, p + 2);
        for (let j = 0; j < 16; j++) {
          y[out + j] = f(f(d * (b[p + 4 + j]! & 15)) + m);
          y[out + j + 16] = f(f(d * (b[p + 4 + j]! >> 4)) + m);
        }
        break;
      }
      case 6: case 7: {
        const d = f16(b, p), m = type === 7 ? f16(b, p + 2) : 0, hOff = type === 7 ? 4 : 2, qOff = hOff + 4;
        const qh = (b[p + hOff]! | (b[p + hOff + 1]! << 8) | (b[p + hOff + 2]! << 16) | (b[p + hOff + 3]! << 24)) >>> 0;
        for (let j = 0; j < 16; j++) {
          const lo = (b[p + qOff + j]! & 15) | (((qh >>> j) & 1) << 4), hi = (b[p + qOff + j]! >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          y[out + j] = type === 6 ? f(d * (lo - 16)) : f(f(d * lo) + m);
          y[out + j + 16] = type === 6 ? f(d * (hi - 16)) : f(f(d * hi) + m);
        }
        break;
      }
      case 8: {
        const d = f16(b, p);
        for (let j = 0; j < 32; j++) y[out + j] = f(d * ((b[p + 2 + j]! << 24) >> 24));
        break;
      }
      case 10: {  // Q2_K: scales[16] qs[64] d dmin
        const d = f16(b, p + 80), dmin = f16(b, p + 82);
        let is = 0, yi = out;
        for (let n = 0; n < 2; n++) {
          const q = p + 16 + 32 * n;
          for (let shift = 0; shift < 8; shift += 2)
            for (let h = 0; h < 2; h++) {
              const sc = b[p + is++]!, dl = f(d * (sc & 15)), ml = f(dmin * (sc >> 4));
              for (let l = 0; l < 16; l++) y[yi++] = f(f(dl * ((b[q + 16 * h + l]! >> shift) & 3)) - ml);
            }
        }
        break;
      }
      case 11: {  // Q3_K: hmask[32] qs[64] scales[12] d
        const d = f16(b, p + 108), s = p + 96;
        const sc = (j: number) => ((j < 8 ? b[s + j]! & 15 : b[s + j - 8]! >> 4) | (((b[s + 8 + (j % 4)]! >> (2 * Math.floor(j / 4))) & 3) << 4)) - 32;
        let is = 0, yi = out, m = 1;
        for (let n = 0; n < 2; n++) {
          const q = p + 32 + 32 * n;
          for (let shift = 0; shift < 8; shift += 2, m <<= 1)
            for (let h = 0; h < 2; h++) {
              const dl = f(d * sc(is++));
              for (let l = 0; l < 16; l++) y[yi++] = f(dl * (((b[q + 16 * h + l]! >> shift) & 3) - (b[p + 16 * h + l]! & m ? 0 : 4)));
            }
        }
        break;
      }
      case 12: case 13: {  // Q4_K / Q5_K: d dmin scales[12] (qh[32]) qs[128]
        const d = f16(b, p), dmin = f16(b, p + 2), q5 = type === 13, qs = p + (q5 ? 48 : 16);
        let yi = out;
        for (let j = 0; j < 4; j++) {
          const [s1, m1] = kScaleMin(2 * j, b, p + 4), [s2, m2] = kScaleMin(2 * j + 1, b, p + 4);
          const d1 = f(d * s1), mm1 = f(dmin * m1), d2 = f(d * s2), mm2 = f(dmin * m2);
          for (let l = 0; l < 32; l++) y[yi++] = f(f(d1 * ((b[qs + 32 * j + l]! & 15) + (q5 && b[p + 16 + l]! & (1 << (2 * j)) ? 16 : 0))) - mm1);
          for (let l = 0; l < 32; l++) y[yi++] = f(f(d2 * ((b[qs + 32 * j + l]! >> 4) + (q5 && b[p + 16 + l]! & (2 << (2 * j)) ? 16 : 0))) - mm2);
        }
        break;
      }
      case 14: {  // Q6_K: ql[128] qh[64] scales[16] d
        const d = f16(b, p + 208);
        for (let n = 0; n < 2; n++) {
          const ql = p + 64 * n, qh = p + 128 + 32 * n, sc = p + 192 + 8 * n, yo = out + 128 * n;
          const s8 = (i: number) => (b[sc + i]! << 24) >> 24;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const q1 = ((b[ql + l]! & 15) | (((b[qh + l]! >> 0) & 3) << 4)) - 32;
            const q2 = ((b[ql + l + 32]! & 15) | (((b[qh + l]! >> 2) & 3) << 4)) - 32;
            const q3 = ((b[ql + l]! >> 4) | (((b[qh + l]! >> 4) & 3) << 4)) - 32;
            const q4 = ((b[ql + l + 32]! >> 4) | (((b[qh + l]! >> 6) & 3) << 4)) - 32;
            y[yo + l] = f(f(d * s8(is)) * q1);
            y[yo + l + 32] = f(f(d * s8(is + 2)) * q2);
            y[yo + l + 64] = f(f(d * s8(is + 4)) * q3);
            y[yo + l + 96] = f(f(d * s8(is + 6)) * q4);
          }
        }
        break;
      }
      case 23: {  // IQ4_XS: d scales_h scales_l[4] qs[128]
        const d = f16(b, p), sh = b[p + 2]! | (b[p + 3]! << 8);
        for (let ib = 0; ib < 8; ib++) {
          const ls = ((b[p + 4 + (ib >> 1)]! >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4), dl = f(d * (ls - 32));
          for (let j = 0; j < 16; j++) {
            y[out + 32 * ib + j] = f(dl * IQ4[b[p + 8 + 16 * ib + j]! & 15]!);
            y[out + 32 * ib + j + 16] = f(dl * IQ4[b[p + 8 + 16 * ib + j]! >> 4]!);
          }
        }
        break;
      }
      default: throw new Error(`no reference for type ${type}`);
    }
  }
  return y;
}

/** The activation block of each type in sparq's contract (32 for all: native/cpu/quants.h). */
export const actBlock = (_type: number): number => 32;
/** ggml's: Q8_0 / Q8_1 blocks of 32 for the 32-value types, Q8_K blocks of 256 for the K types and IQ4_XS. */
export const ggmlActBlock = (type: number): number => (SPEC[type]!.block === 256 ? 256 : 32);

/** Activations as the block linear quantizes them: per block of B, d = max|x| / 127, q = rint(x * (127 / max|x|)). */
export function quantBlocks(x: ArrayLike<number>, m: number, k: number, B: number): { q: Int32Array; d: Float32Array } {
  const q = new Int32Array(m * k), d = new Float32Array((m * k) / B);
  for (let i = 0; i < m; i++)
    for (let b = 0; b < k / B; b++) {
      let amax = 0;
      for (let c = 0; c < B; c++) amax = Math.max(amax, Math.abs(x[i * k + b * B + c]!));
      d[(i * k) / B + b] = f(amax / 127);
      const id = amax > 0 ? f(127 / amax) : 0;
      for (let c = 0; c < B; c++) q[i * k + b * B + c] = Math.max(-127, Math.min(127, roundEven(f(x[i * k + b * B + c]! * id))));
    }
  return { q, d };
}
