// ggml_rows.ts - rows for comparing GGUF quantizers (sparq's and ggml's): random
// ones at several magnitudes, and awkward ones (all zero, a constant, one
// outlier, values below f16's range, all of one sign), and the comparison.
import { dequantize } from './ggml_ref';

/** `rows` rows of k values (the first few awkward, the rest normal at magnitudes 1e-3 .. 1e3), seeded. */
export function ggmlRows(k: number, seed: number, rows = 24): { x: Float32Array; rows: number } {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const x = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * k, (r + 1) * k);
    switch (r) {
      case 0: break;                                                          // zeros
      case 1: row.fill(0.75); break;                                          // a constant
      case 2: row.forEach((_, i) => { row[i] = 0.01 * normal(); }); row[k >> 1] = 40; break;  // one outlier
      case 3: row.forEach((_, i) => { row[i] = 1e-9 * normal(); }); break;   // below f16's normal range
      case 4: row.forEach((_, i) => { row[i] = Math.abs(normal()) + 0.5; }); break;  // all positive
      case 5: row.forEach((_, i) => { row[i] = -Math.abs(normal()) - 0.5; }); break; // all negative
      case 6: row.forEach((_, i) => { row[i] = i % 32 < 16 ? 0 : normal(); }); break; // zero half-blocks
      default: {
        const mag = 10 ** (-3 + (r % 7));
        row.forEach((_, i) => { row[i] = mag * normal(); });
      }
    }
  }
  return { x, rows };
}

/** Blocks byte-identical, and the largest difference of the dequantized values. */
export function compareQuantized(t: { type: number; block: number; bytes: number }, a: Uint8Array, b: Uint8Array): { blocks: number; sameBlocks: number; maxDiff: number } {
  const blocks = a.length / t.bytes;
  let same = 0;
  for (let i = 0; i < blocks; i++) {
    let eq = true;
    for (let j = 0; j < t.bytes && eq; j++) eq = a[i * t.bytes + j] === b[i * t.bytes + j];
    if (eq) same++;
  }
  const da = dequantize(t.type, a, blocks), db = dequantize(t.type, b, blocks);
  let maxDiff = 0;
  for (let i = 0; i < da.length; i++) maxDiff = Math.max(maxDiff, Math.abs(da[i]! - db[i]!));
  return { blocks, sameBlocks: same, maxDiff };
}
