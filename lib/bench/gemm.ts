// gemm.ts - the GEMM benchmark (`npx sparq bench gemm`): int8 linear (dynamic
// per-token activations, per-channel weights) on every ISA path this machine
// runs, and the f32 path, for m in {1, 8, 128, 512} x n = k = 4096 and 2048^3.
// Prints GOPS and % of the path's ceiling (measured here, and the reference
// machine of docs/PERFORMANCE numbers), GEMV as GB/s of weights streamed from
// DRAM (weights rotated over >= 256 MiB), median and spread; writes JSON.
import * as os from 'node:os';
import { info, linear, quantize, setIsa, setNumThreads, Tensor, type IsaName, type QuantizedTensor } from '../index';
import { loadNative } from '../native';
import { ceilingOf, ceilingsLine, measure, table, writeJson } from './harness';

export interface GemmBenchOptions {
  isas?: IsaName[];
  /** also time int8 weights quantized per group of these sizes (Q8_0 is groups of 32) */
  groups?: number[];
  threads?: number;
  minTime?: number;
  quick?: boolean;
  json?: string;
  shapes?: [number, number, number][];
  log?: (s: string) => void;
}

// Reference ceilings (GOPS) of the Sapphire-Rapids-class machine in PERFORMANCE.md:
// [1 core, 2 cores]. 1 multiply-add = 2 ops.
const REF_CEILING: Record<string, [number, number]> = {
  avx2: [208, 418], avxvnni: [453, 900], avx512vnni: [837, 1658], amx: [6200, 12200],
  'f32-avx2': [105, 224], 'f32-avx512': [200, 420],
};
const REF_DRAM_GBS = 30;

function refCeiling(key: string, threads: number): number {
  const c = REF_CEILING[key];
  if (!c) return NaN;
  return threads === 2 ? c[1] : c[0] * threads;
}

export async function benchGemm(opts: GemmBenchOptions = {}): Promise<unknown> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (opts.threads) setNumThreads(opts.threads);
  const inf = info();
  const threads = inf.threads;
  const minTime = opts.minTime ?? (opts.quick ? 0.25 : 1.0);
  const supported = inf.cpu.supportedIsas, emulated = inf.cpu.emulatedIsas;
  if (emulated.length) log(`note: this build emulates ${emulated.join(', ')} (SPARQ_EMULATE_ISA): their times are not the hardware's`);
  const isas = (opts.isas ?? supported.filter((i) => i !== 'ref' && !emulated.includes(i))).filter((i) => {
    if (!supported.includes(i)) log(`skipping ${i}: this CPU/OS cannot run it (supported: ${supported.join(', ')})`);
    return supported.includes(i);
  });
  const shapes: [number, number, number][] = opts.shapes ??
    (opts.quick ? [[1, 4096, 4096], [8, 4096, 4096], [128, 4096, 4096]] :
      [[1, 4096, 4096], [8, 4096, 4096], [128, 4096, 4096], [512, 4096, 4096], [2048, 2048, 2048]]);

  log(`sparq ${inf.version} GEMM benchmark - ${inf.cpu.brand || inf.cpu.vendor}, ${threads} threads, best int8 path ${inf.kernels.gemm_s8}`);
  log('measuring this machine\'s ceilings (in-register loops of each unit it has, DRAM read over 1 GiB)...');
  const local = await loadNative().ceilings(opts.quick ? 256 * 2 ** 20 : 2 ** 30);
  log(`  ${ceilingsLine(local)}`);
  const localCeiling = (key: string) => ceilingOf(local, key);

  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  const best = inf.kernels.gemm_s8;

  const record = (path: string, key: string, m: number, n: number, k: number, s: Awaited<ReturnType<typeof measure>>, weightBytes: number) => {
    const gops = (2 * m * n * k) / (s.medianMs * 1e6);
    const gbs = m <= 8 ? weightBytes / (s.medianMs * 1e6) : NaN;
    const r = {
      path, m, n, k, median_ms: s.medianMs, p10_ms: s.p10Ms, p90_ms: s.p90Ms, min_ms: s.minMs, max_ms: s.maxMs, spread_pct: s.spreadPct, reps: s.reps, gops,
      pct_local_peak: (100 * gops) / localCeiling(key), pct_ref_peak: (100 * gops) / refCeiling(key, threads),
      weight_gbs: gbs, pct_local_dram: (100 * gbs) / local.dramReadGBs, pct_ref_dram: (100 * gbs) / REF_DRAM_GBS,
    };
    results.push(r);
    rows.push({
      path, m, n, k, 'median ms': s.medianMs, 'p10-p90 %': s.spreadPct, GOPS: gops,
      '% peak here': r.pct_local_peak, '% peak ref': r.pct_ref_peak, 'GB/s W': gbs, '% DRAM here': r.pct_local_dram, 'faults/call': s.faultsPerCall,
    });
    log(table([rows[rows.length - 1]!], 10).split('\n')[2]!);
  };

  const header = table([{ path: '', m: 0, n: 0, k: 0, 'median ms': 0, 'p10-p90 %': 0, GOPS: 0, '% peak here': 0, '% peak ref': 0, 'GB/s W': 0, '% DRAM here': 0, 'faults/call': 0 }], 10).split('\n');
  log(header[0]!);
  log(header[1]!);

  try {
    for (const [m, n, k] of shapes) {
      const x = Tensor.rand([m, k], { seed: 1 });
      // decode shapes stream weights from DRAM: rotate sets totalling >= 256 MiB
      // (8x a 32 MiB L3), so no set is still cached when it comes round again
      const ROTATE = 256 * 2 ** 20;
      const sets = m <= 8 ? Math.max(1, Math.ceil(ROTATE / (n * k))) : 1;
      const wf: Tensor[] = [];
      const wq: QuantizedTensor[] = [];
      const groups = opts.groups ?? [];
      const wg: QuantizedTensor[][] = groups.map(() => []);
      for (let s = 0; s < sets; s++) {
        const w = Tensor.rand([n, k], { seed: 100 + s, min: -0.05, max: 0.05 });
        wq.push(quantize(w));
        groups.forEach((g, i) => wg[i]!.push(quantize(w, { granularity: 'per-group', groupSize: g })));
        if (m > 8 || s < Math.max(1, Math.ceil(ROTATE / (n * k * 4)))) wf.push(w);
        else w.dispose();
      }
      for (const isa of isas) {
        setIsa(isa);
        const s = await measure(async (rep) => {
          (await linear(x, wq[rep % wq.length]!)).dispose();
        }, minTime);
        record(`int8 ${isa}`, isa, m, n, k, s, n * k);
        if (isa === best) {
          // the same calls with each output left to the garbage collector, as most JS code does
          const g = await measure(async (rep) => { await linear(x, wq[rep % wq.length]!); }, minTime);
          record(`int8 ${isa}, output GC'd`, isa, m, n, k, g, n * k);
        }
        for (const [i, g] of groups.entries()) {
          const sg = await measure(async (rep) => {
            (await linear(x, wg[i]![rep % wg[i]!.length]!)).dispose();
          }, minTime);
          record(`int8 g${g} ${isa}`, isa, m, n, k, sg, n * k + (n * k / g) * 4);
        }
      }
      setIsa(best);
      const f32key = `f32-${info().kernels.sgemm}`;
      const s = await measure(async (rep) => {
        (await linear(x, wf[rep % wf.length]!)).dispose();
      }, minTime);
      record(`f32 ${info().kernels.sgemm}`, f32key, m, n, k, s, n * k * 4);
      x.dispose();
      wf.forEach((t) => t.dispose());
      wq.forEach((t) => t.dispose());
      wg.flat().forEach((t) => t.dispose());
    }
  } finally {
    setIsa(best);
  }

  const out = {
    bench: 'gemm', date: new Date().toISOString(), version: inf.version, host: os.hostname(),
    cpu: inf.cpu, threads, local_ceilings: local, reference_ceilings: REF_CEILING, reference_dram_gbs: REF_DRAM_GBS,
    note: 'GOPS = 2*m*n*k / time of one linear() call from JS (activation quantization, GEMM, epilogue); GB/s W = weight bytes / time for m <= 8',
    results,
  };
  log(`\nsummary (${threads} threads; "% peak here" uses the ceilings measured above, "% peak ref" the reference machine's):`);
  log(table(rows, 10));
  const file = writeJson(opts.json ?? `bench-results/gemm-${Date.now()}.json`, out);
  log(`\nwrote ${file}`);
  return out;
}

