// quants.ts - the GGUF block-format benchmark (`npx sparq bench quants`): the
// block linear for every quantized ggml type at decode (m = 1, 8: GB/s of the
// stored blocks streamed from DRAM, weights rotated over >= 256 MiB, and % of
// the DRAM read bandwidth measured here) and prefill (m = 128, 512: GOPS), on
// the int8 per-channel path beside them; n = k = 4096. Median and spread; JSON.
import * as os from 'node:os';
import { info, linear, quantize, setNumThreads, Tensor, type QuantizedTensor } from '../index';
import { loadNative, type NativeStorage } from '../native';
import { measure, table, writeJson } from './harness';

export interface QuantsBenchOptions {
  /** ggml type names (default: every quantized type) */
  types?: string[];
  ms?: number[];
  threads?: number;
  minTime?: number;
  quick?: boolean;
  json?: string;
  log?: (s: string) => void;
}

export async function benchQuants(opts: QuantsBenchOptions = {}): Promise<unknown> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (opts.threads) setNumThreads(opts.threads);
  const inf = info(), nat = loadNative();
  const minTime = opts.minTime ?? (opts.quick ? 0.25 : 1.0);
  const all = nat.ggmlTypes().filter((t) => t.quantized);
  const want = (opts.types ?? all.map((t) => t.name)).map((s) => s.toUpperCase());
  const types = all.filter((t) => want.includes(t.name));
  const ms = opts.ms ?? (opts.quick ? [1, 128] : [1, 8, 128, 512]);
  const n = 4096, k = 4096;
  log(`sparq ${inf.version} GGUF block-format benchmark - ${inf.cpu.brand || inf.cpu.vendor}, ${inf.threads} threads, int8 path ${inf.kernels.gemm_s8}`);
  const local = await nat.ceilings(opts.quick ? 256 * 2 ** 20 : 2 ** 30);
  log(`DRAM read here: ${local.dramReadGBs.toFixed(1)} GB/s`);
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  const ROTATE = 256 * 2 ** 20;
  const header = table([{ type: '', m: 0, 'median ms': 0, 'p10-p90 %': 0, GOPS: 0, 'GB/s W': 0, '% DRAM': 0, 'B/weight': 0 }], 9).split('\n');
  log(header[0]!);
  log(header[1]!);
  const record = (type: string, m: number, bytes: number, s: Awaited<ReturnType<typeof measure>>) => {
    const gops = (2 * m * n * k) / (s.medianMs * 1e6), gbs = m <= 8 ? bytes / (s.medianMs * 1e6) : NaN;
    const r = { type, m, n, k, median_ms: s.medianMs, p10_ms: s.p10Ms, p90_ms: s.p90Ms, spread_pct: s.spreadPct, reps: s.reps, gops, weight_gbs: gbs, pct_dram: (100 * gbs) / local.dramReadGBs, bytes_per_weight: bytes / (n * k) };
    results.push(r);
    rows.push({ type, m, 'median ms': s.medianMs, 'p10-p90 %': s.spreadPct, GOPS: gops, 'GB/s W': gbs, '% DRAM': r.pct_dram, 'B/weight': r.bytes_per_weight });
    log(table([rows[rows.length - 1]!], 9).split('\n')[2]!);
  };
  for (const m of ms) {
    const x = Tensor.rand([m, k], { seed: 1 }), y = Tensor._alloc([m, n], 'f32');
    // the int8 per-channel baseline
    {
      const sets = m <= 8 ? Math.ceil(ROTATE / (n * k)) : 1;
      const ws: QuantizedTensor[] = [];
      for (let s = 0; s < sets; s++) {
        const w = Tensor.rand([n, k], { seed: 100 + s, min: -0.05, max: 0.05 });
        ws.push(quantize(w));
        w.dispose();
      }
      const s = await measure(async (rep) => { (await linear(x, ws[rep % ws.length]!)).dispose(); }, minTime);
      record('int8', m, n * k + n * 4, s);
      ws.forEach((w) => w.dispose());
    }
    for (const t of types) {
      const bytes = (n * k / t.block) * t.bytes;
      const sets = m <= 8 ? Math.ceil(ROTATE / bytes) : 1;
      const ws: NativeStorage[] = [];
      for (let s = 0; s < sets; s++) {
        if (s > 0 && s >= 4) { ws.push(ws[s % 4]!); continue; }  // 4 distinct sets, then copies below
        const w = Tensor.rand([n, k], { seed: 200 + s, min: -0.05, max: 0.05 });
        ws.push(await nat.ggmlQuantize(w._storage, w._offset, t.type, n, k));
        w.dispose();
      }
      // distinct memory for every set (copies of the first four)
      for (let s = 4; s < sets; s++) {
        const src = ws[s % 4]!, c = Tensor._alloc([bytes], 'u8');
        c._storage.write(new Uint8Array(src.read(0, bytes)), c._offset);
        ws[s] = c._storage;
      }
      const s = await measure(async (rep) => {
        await nat.linearBlocks(ws[rep % ws.length]!, 0, t.type, n, k, x._storage, x._offset, m, y._storage, y._offset);
      }, minTime);
      record(t.name, m, bytes, s);
      for (const w of new Set(ws)) w.dispose();
    }
    x.dispose();
    y.dispose();
  }
  const out = {
    bench: 'quants', date: new Date().toISOString(), version: inf.version, host: os.hostname(), cpu: inf.cpu, threads: inf.threads,
    dram_read_gbs: local.dramReadGBs,
    note: 'one block linear from JS (activation quantization, decode / expansion, product); GB/s W = stored block bytes / time for m <= 8',
    results,
  };
  log(`\nsummary (${inf.threads} threads):`);
  log(table(rows, 9));
  const file = writeJson(opts.json ?? `bench-results/quants-${Date.now()}.json`, out);
  log(`\nwrote ${file}`);
  return out;
}
