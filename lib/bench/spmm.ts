// spmm.ts - the sparse benchmark (`npx sparq bench spmm`): n = k = 4096,
// m in {1, 8, 128}, sparsity in {0.5, 0.7, 0.9, 0.95}, every format with f32
// and int8 values (bitmask and N:M also int4, groups of 64), timed against our
// dense int8, dense int4 (groups of 32) and dense f32 linear on the same shape;
// prints the speed-up and the break-even sparsity per m, format and value type
// (int4 against dense int4, int8 against dense int8, f32 against dense f32) and
// int8 path (`--isa`; default every path the CPU runs natively but ref).
// For m <= 8 every timing rotates over copies of its weight (up to 24) that
// add up to >= 128 MiB, four times the 32 MiB L3, so decode shapes read from
// DRAM as they would in a model: with fewer bytes in rotation, part of each
// call hit the L3 (dense int8 showed more GB/s than DRAM delivers).
import * as os from 'node:os';
import { info, linear, prune, quantize, setIsa, setNumThreads, Tensor, type IsaName, type QuantizedTensor, type SparseTensor } from '../index';
import { loadNative } from '../native';
import { measure, table, writeJson } from './harness';

export interface SpmmBenchOptions {
  threads?: number;
  /** int8 paths to run (default: every one this CPU runs natively but ref); the sparse kernels follow the path */
  isas?: IsaName[];
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
  const supported = inf.cpu.supportedIsas, emulated = inf.cpu.emulatedIsas;
  const isas = (opts.isas ?? supported.filter((i) => i !== 'ref' && !emulated.includes(i))).filter((i) => {
    if (!supported.includes(i)) log(`skipping ${i}: this CPU/OS cannot run it (supported: ${supported.join(', ')})`);
    return supported.includes(i);
  });
  if (!isas.length) throw new Error('bench spmm: no path to run');
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
  // one sparse result: against each dense baseline, and its own value type's (f32, int8, int4: `x dense same`)
  let d32ms = 0, d8ms = 0, d4ms = 0;
  let isa: IsaName = 'ref';
  const record = (m: number, sp: number, format: string, dtype: 'f32' | 'i8' | 'i4', s: { medianMs: number; spreadPct: number }, bytes: number) => {
    const same = dtype === 'f32' ? d32ms : dtype === 'i8' ? d8ms : d4ms;
    const r = {
      isa, m, sparsity: sp, format, dtype, median_ms: s.medianMs, spread_pct: s.spreadPct, bytes,
      bytes_per_weight: bytes / (n * k), weight_gbs: gbs(bytes, s.medianMs), pct_of_dram: (100 * gbs(bytes, s.medianMs)) / ceil.dramReadGBs,
      speedup_vs_dense_f32: d32ms / s.medianMs, speedup_vs_dense_int8: d8ms / s.medianMs, speedup_vs_dense_int4: d4ms / s.medianMs,
      speedup_vs_dense_same: same / s.medianMs, dense_f32_ms: d32ms, dense_int8_ms: d8ms, dense_int4_ms: d4ms,
    };
    results.push(r);
    rows.push({ isa, m, sparsity: sp, format, values: dtype, 'median ms': s.medianMs, 'spread %': s.spreadPct, 'B/weight': r.bytes_per_weight,
      'x dense int8': r.speedup_vs_dense_int8, 'x dense same': r.speedup_vs_dense_same, '% DRAM': m <= 8 ? r.pct_of_dram : '' });
    log(table([rows[rows.length - 1]!], 8).split('\n')[2]!);
  };
  const timeIt = async (m: number, ws: (Tensor | QuantizedTensor | SparseTensor)[]) => {
    const x = Tensor.rand([m, k], { seed: 1 });
    const s = await measure(async (rep) => (await linear(x, ws[rep % ws.length]!)).dispose(), minTime, 5);
    x.dispose();
    return s;
  };
  try {
    for (const path of isas) {
      isa = path;
      setIsa(isa);
      log(`\n${isa}: sparse kernels ${info().kernels.sparse}, int8 ${info().kernels.linear_s8}`);
      for (const m of ms) {
        const d32 = await timeIt(m, dense.slice(0, sets(n * k * 4, m)));
        const q8 = copies(sets(n * k, m), (w) => quantize(w));
        const d8 = await timeIt(m, q8);
        q8.forEach((q) => q.dispose());
        // dense int4, groups of 32 (what quantizeModel's int4 defaults to)
        const nat = loadNative();
        const q4 = await Promise.all(Array.from({ length: sets(n * k / 2, m) }, (_, i) => nat.q4Quantize(dense[i % dense.length]!._storage, dense[i % dense.length]!._offset, n, k, 32)));
        const q4Bytes = nat.linearStoredBytes(q4[0]!);
        const x4 = Tensor.rand([m, k], { seed: 1 }), y4 = Tensor.zeros([m, n]);
        const d4 = await measure(async (rep) => nat.linearQ4(q4[rep % q4.length]!, x4._storage, x4._offset, m, y4._storage, y4._offset), minTime, 5);
        [x4, y4].forEach((t) => t.dispose());
        q4.forEach((q) => q.dispose());
        log(`m=${m}: dense f32 ${d32.medianMs.toFixed(3)} ms, dense int8 ${d8.medianMs.toFixed(3)} ms, dense int4 ${d4.medianMs.toFixed(3)} ms` +
          (m <= 8 ? ` (${gbs(n * k * 4, d32.medianMs).toFixed(1)} / ${gbs(n * k, d8.medianMs).toFixed(1)} / ${gbs(q4Bytes, d4.medianMs).toFixed(1)} GB/s of weights)` : ''));
        d32ms = d32.medianMs;
        d8ms = d8.medianMs;
        d4ms = d4.medianMs;
        const dense4 = { isa, m, sparsity: 0, format: 'dense', dtype: 'i4', median_ms: d4.medianMs, spread_pct: d4.spreadPct, bytes: q4Bytes,
          weight_gbs: gbs(q4Bytes, d4.medianMs), pct_of_dram: (100 * gbs(q4Bytes, d4.medianMs)) / ceil.dramReadGBs };
        results.push(dense4);
        const make = (w: Tensor, o: Parameters<typeof prune>[1], dtype: 'f32' | 'i8' | 'i4') => {
          const p = prune(w, o);
          if (dtype === 'f32') return p;
          const q = dtype === 'i8' ? quantize(p) : quantize(p, { bits: 4, groupSize: 64 });
          p.dispose();
          return q;
        };
        for (const sp of sps)
          for (const format of ['bitmask', 'csr'] as const)
            for (const dtype of format === 'csr' ? ['f32', 'i8'] as const : ['f32', 'i8', 'i4'] as const) {
              const make1 = (w: Tensor) => make(w, { sparsity: sp, format }, dtype);
              const first = make1(dense[0]!);
              const ws = [first, ...copies(sets(first.bytes, m), make1, 1)];
              const s = await timeIt(m, ws);
              const bytes = first.bytes;
              ws.forEach((w) => w.dispose());
              record(m, sp, format, dtype, s, bytes);
            }
        // N:M (fixed 50%)
        for (const pattern of ['2:4', '4:8'] as const)
          for (const dtype of ['f32', 'i8', 'i4'] as const) {
            const make1 = (w: Tensor) => make(w, { pattern }, dtype);
            const first = make1(dense[0]!);
            const ws = [first, ...copies(sets(first.bytes, m), make1, 1)];
            const s = await timeIt(m, ws);
            const bytes = first.bytes;
            ws.forEach((w) => w.dispose());
            record(m, 0.5, `nm ${pattern}`, dtype, s, bytes);
          }
      }
    }
  } finally {
    setIsa(isas[0]!);
    dense.forEach((t) => t.dispose());
  }
  // break-even: the lowest measured sparsity at which the format beats its dense counterpart
  log('\nbreak-even sparsity (lowest measured where sparse beats dense of the same value type):');
  const be: Record<string, unknown>[] = [];
  for (const path of isas)
    for (const m of ms)
      for (const format of ['bitmask', 'csr'])
        for (const dtype of format === 'csr' ? ['f32', 'i8'] : ['f32', 'i8', 'i4']) {
          const hit = results.filter((r) => r.isa === path && r.m === m && r.format === format && r.dtype === dtype).find((r) => (r.speedup_vs_dense_same as number) > 1);
          be.push({ isa: path, m, format, dtype, break_even: hit ? hit.sparsity : null });
          log(`  ${path} m=${m} ${format} ${dtype}: ${hit ? `<= ${String(hit.sparsity)}` : `> ${sps[sps.length - 1]}`}`);
        }
  log('');
  log(table(rows, 8));
  const out = { bench: 'spmm', date: new Date().toISOString(), version: inf.version, host: os.hostname(), cpu: inf.cpu, threads: inf.threads, n, k,
    dram_read_gbs: ceil.dramReadGBs, kernels: inf.kernels, results, break_even: be };
  const file = writeJson(opts.json ?? `bench-results/spmm-${Date.now()}.json`, out);
  log(`\nwrote ${file}`);
  return out;
}
