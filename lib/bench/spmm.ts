// spmm.ts - the sparse benchmark (`npx sparq bench spmm`): n = k = 4096,
// m in {1, 8, 128}, sparsity in {0.5, 0.7, 0.9, 0.95}, every format with f32
// and int8 values, timed against our dense int8 and dense f32 linear on the
// same shape; prints the speed-up and the break-even sparsity per m and format.
// For m <= 8 every timing rotates over copies of its weight (up to 24) that
// add up to >= 128 MiB, four times the 32 MiB L3, so decode shapes read from
// DRAM as they would in a model: with fewer bytes in rotation, part of each
// call hit the L3 (dense int8 showed more GB/s than DRAM delivers).
import * as os from 'node:os';
import { info, linear, prune, quantize, setNumThreads, Tensor, type QuantizedTensor, type SparseTensor } from '../index';
import { loadNative } from '../native';
import { measure, table, writeJson } from './harness';

export interface SpmmBenchOptions {
  threads?: number;
  quick?: boolean;
  minTime?: number;
  json?: string;
  log?: (s: string) => void;
}

export async function benchSpmm(opts: SpmmBenchOptions = {}): Promise<unknown> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (opts.threads) setNumThreads(opts.threads);
  const inf = info();
  const n = 4096, k = 4096;
  const ms = opts.quick ? [1, 128] : [1, 8, 128];
  const sps = opts.quick ? [0.5, 0.9] : [0.5, 0.7, 0.9, 0.95];
  const minTime = opts.minTime ?? (opts.quick ? 0.2 : 0.5);
  log(`sparq ${inf.version} sparse benchmark - ${inf.cpu.brand || inf.cpu.vendor}, ${inf.threads} threads, n = k = ${n}, ` +
    `sparse kernels: ${inf.kernels.sparse}, int8: ${inf.kernels.linear_s8}`);
  const ceil = await loadNative().ceilings(opts.quick ? 256 * 2 ** 20 : 2 ** 30);
  log(`  DRAM read ${ceil.dramReadGBs.toFixed(1)} GB/s (m <= 8 rows also give GB/s of weight bytes and % of it)`);
  const gbs = (bytes: number, ms: number) => bytes / (ms * 1e6);
  // copies in rotation for m <= 8: >= 128 MiB in all, at most 24
  const sets = (bytes: number, m: number) => (m <= 8 ? Math.min(24, Math.max(1, Math.ceil((128 * 2 ** 20) / bytes))) : 1);
  const copies = <T>(count: number, make: (w: Tensor) => T, from = 0) =>
    Array.from({ length: Math.max(0, count - from) }, (_, i) => make(dense[(from + i) % dense.length]!));
  const dense = Array.from({ length: 4 }, (_, s) => Tensor.rand([n, k], { seed: 10 + s, std: 0.02 }));
  const results: Record<string, unknown>[] = [];
  const rows: Record<string, string | number>[] = [];
  const timeIt = async (m: number, ws: (Tensor | QuantizedTensor | SparseTensor)[]) => {
    const x = Tensor.rand([m, k], { seed: 1 });
    const s = await measure(async (rep) => (await linear(x, ws[rep % ws.length]!)).dispose(), minTime, 5);
    x.dispose();
    return s;
  };
  try {
    for (const m of ms) {
      const d32 = await timeIt(m, dense.slice(0, sets(n * k * 4, m)));
      const q8 = copies(sets(n * k, m), (w) => quantize(w));
      const d8 = await timeIt(m, q8);
      q8.forEach((q) => q.dispose());
      log(`m=${m}: dense f32 ${d32.medianMs.toFixed(3)} ms, dense int8 ${d8.medianMs.toFixed(3)} ms` +
        (m <= 8 ? ` (${gbs(n * k * 4, d32.medianMs).toFixed(1)} / ${gbs(n * k, d8.medianMs).toFixed(1)} GB/s of weights)` : ''));
      for (const sp of sps)
        for (const format of ['bitmask', 'csr'] as const)
          for (const dtype of ['f32', 'i8'] as const) {
            const make = (w: Tensor) => { const p = prune(w, { sparsity: sp, format }); if (dtype === 'f32') return p; const q = quantize(p); p.dispose(); return q; };
            const first = make(dense[0]!);
            const ws = [first, ...copies(sets(first.bytes, m), make, 1)];
            const s = await timeIt(m, ws);
            const bytes = first.bytes;
            ws.forEach((w) => w.dispose());
            const r = {
              m, sparsity: sp, format, dtype, median_ms: s.medianMs, spread_pct: s.spreadPct, bytes,
              weight_gbs: gbs(bytes, s.medianMs), pct_of_dram: (100 * gbs(bytes, s.medianMs)) / ceil.dramReadGBs,
              speedup_vs_dense_f32: d32.medianMs / s.medianMs, speedup_vs_dense_int8: d8.medianMs / s.medianMs,
              dense_f32_ms: d32.medianMs, dense_int8_ms: d8.medianMs,
            };
            results.push(r);
            rows.push({ m, sparsity: sp, format, values: dtype, 'median ms': s.medianMs, 'spread %': s.spreadPct, 'MiB': bytes / 2 ** 20,
              'x dense f32': r.speedup_vs_dense_f32, 'x dense int8': r.speedup_vs_dense_int8, '% DRAM': m <= 8 ? r.pct_of_dram : '' });
            log(table([rows[rows.length - 1]!], 8).split('\n')[2]!);
          }
      // N:M (fixed 50%)
      for (const pattern of ['2:4', '4:8'] as const)
        for (const dtype of ['f32', 'i8'] as const) {
          const make = (w: Tensor) => { const p = prune(w, { pattern }); if (dtype === 'f32') return p; const q = quantize(p); p.dispose(); return q; };
          const first = make(dense[0]!);
          const ws = [first, ...copies(sets(first.bytes, m), make, 1)];
          const s = await timeIt(m, ws);
          const bytes = first.bytes;
          ws.forEach((w) => w.dispose());
          const r = { m, sparsity: 0.5, format: `nm ${pattern}`, dtype, median_ms: s.medianMs, spread_pct: s.spreadPct, bytes,
            weight_gbs: gbs(bytes, s.medianMs), pct_of_dram: (100 * gbs(bytes, s.medianMs)) / ceil.dramReadGBs,
            speedup_vs_dense_f32: d32.medianMs / s.medianMs, speedup_vs_dense_int8: d8.medianMs / s.medianMs, dense_f32_ms: d32.medianMs, dense_int8_ms: d8.medianMs };
          results.push(r);
          rows.push({ m, sparsity: 0.5, format: `nm ${pattern}`, values: dtype, 'median ms': s.medianMs, 'spread %': s.spreadPct, 'MiB': bytes / 2 ** 20,
            'x dense f32': r.speedup_vs_dense_f32, 'x dense int8': r.speedup_vs_dense_int8, '% DRAM': m <= 8 ? r.pct_of_dram : '' });
          log(table([rows[rows.length - 1]!], 8).split('\n')[2]!);
        }
    }
  } finally {
    dense.forEach((t) => t.dispose());
  }
  // break-even: the lowest measured sparsity at which the format beats its dense counterpart
  log('\nbreak-even sparsity (lowest measured where sparse beats dense of the same value type):');
  const be: Record<string, unknown>[] = [];
  for (const m of ms)
    for (const format of ['bitmask', 'csr'])
      for (const dtype of ['f32', 'i8']) {
        const hit = results.filter((r) => r.m === m && r.format === format && r.dtype === dtype)
          .find((r) => (dtype === 'f32' ? (r.speedup_vs_dense_f32 as number) : (r.speedup_vs_dense_int8 as number)) > 1);
        be.push({ m, format, dtype, break_even: hit ? hit.sparsity : null });
        log(`  m=${m} ${format} ${dtype}: ${hit ? `<= ${String(hit.sparsity)}` : `> ${sps[sps.length - 1]}`}`);
      }
  log('');
  log(table(rows, 8));
  const out = { bench: 'spmm', date: new Date().toISOString(), version: inf.version, host: os.hostname(), cpu: inf.cpu, threads: inf.threads, n, k,
    dram_read_gbs: ceil.dramReadGBs, kernels: inf.kernels, results, break_even: be };
  const file = writeJson(opts.json ?? `bench-results/spmm-${Date.now()}.json`, out);
  log(`\nwrote ${file}`);
  return out;
}
