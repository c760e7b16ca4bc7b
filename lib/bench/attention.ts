// attention.ts - the attention benchmark (`npx sparq bench attention`).
// Prefill: t in {512, 2048, 8192}, d in {64, 128}, 12 and 32 heads, causal and
// not; GFLOP/s (4 t^2 d per head, halved when causal) and % of the f32 FMA
// ceiling; the materialising version's time and peak memory beside it.
// Decode: one query row per head against caches of 512..16384 positions in
// f32 / f16 / int8; GB/s of key/value bytes read and % of DRAM bandwidth
// (caches rotated over >= 256 MiB so they come from DRAM), int8 and f16
// speed-up over f32. Median and p10-p90 spread; writes JSON.
import * as os from 'node:os';
import { attention, attentionNaive, info, KVCache, setNumThreads, Tensor, type KVDType } from '../index';
import { loadNative } from '../native';
import { ceilingsLine, measure, rssGrowth, table, writeJson } from './harness';

export interface AttentionBenchOptions {
  threads?: number;
  minTime?: number;
  quick?: boolean;
  json?: string;
  log?: (s: string) => void;
}

// The reference machine of docs/PERFORMANCE.md: f32 FMA GFLOP/s with AVX-512 on 2 cores.
const REF_F32_AVX512_GFLOPS_2C = 420;

const KV_BYTES: Record<KVDType, number> = { f32: 4, f16: 2, i8: 1 };

export async function benchAttention(opts: AttentionBenchOptions = {}): Promise<unknown> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (opts.threads) setNumThreads(opts.threads);
  const inf = info();
  const threads = inf.threads;
  const quick = opts.quick ?? false;
  const minTime = opts.minTime ?? (quick ? 0.25 : 1.0);
  log(`sparq ${inf.version} attention benchmark - ${inf.cpu.brand || inf.cpu.vendor}, ${threads} threads, kernels ${inf.kernels.attention}`);
  log('measuring this machine\'s ceilings...');
  const local = await loadNative().ceilings(quick ? 256 * 2 ** 20 : 2 ** 30);
  log(`  ${ceilingsLine(local)}`);
  // rated against the FMA unit the attention kernels use
  const avx512 = /avx512/.test(inf.kernels.attention) && local.fp32Avx512Gops > 0;
  const fmaPeak = avx512 ? local.fp32Avx512Gops : local.fp32Avx2Gops, fmaName = avx512 ? 'AVX-512' : 'AVX2';
  const refPeak = threads === 2 ? REF_F32_AVX512_GFLOPS_2C : (REF_F32_AVX512_GFLOPS_2C / 2) * threads;

  // --- prefill -----------------------------------------------------------------
  const prefill: Record<string, unknown>[] = [];
  const prows: Record<string, string | number>[] = [];
  const ts = quick ? [512, 2048] : [512, 2048, 8192];
  const ds = [64, 128];
  const hs = quick ? [12] : [12, 32];
  const pHeader = { t: 0, d: 0, heads: 0, causal: '', 'median ms': 0, 'p10-p90 %': 0, 'GFLOP/s': 0, '% FMA here': 0, '% AVX512 ref': 0, 'faults/call': 0, "GC'd ms": 0, "GC'd faults": 0, 'extra MiB': 0, 'naive ms': 0, 'naive MiB': 0 };
  log('\nprefill (q = k = v = [1, heads, t, d], f32)');
  const ph = table([pHeader], 9).split('\n');
  log(ph[0]!);
  log(ph[1]!);
  for (const t of ts)
    for (const d of ds)
      for (const h of hs)
        for (const causal of quick ? [true] : [true, false]) {
          const shape = [1, h, t, d];
          const q = Tensor.rand(shape, { seed: 1 }), k = Tensor.rand(shape, { seed: 2 }), v = Tensor.rand(shape, { seed: 3 });
          const flops = 4 * t * t * d * h * (causal ? 0.5 : 1);
          const long = flops > 2e11;  // seconds per call: fewer repetitions
          const s = await measure(async () => (await attention(q, k, v, { causal })).dispose(), long ? 0 : minTime, long ? 3 : 5, 1);
          // the same calls with each output left to the garbage collector, as most JS code does
          const g = await measure(async () => { await attention(q, k, v, { causal }); }, long ? 0 : minTime, long ? 3 : 5, 1);
          const extra = await rssGrowth(async () => (await attention(q, k, v, { causal })).dispose());
          // the materialising version: one configuration per (t, d), where it fits comfortably
          let naive: Awaited<ReturnType<typeof measure>> | null = null, naiveMem = NaN;
          if (h === hs[0] && causal && t * t * 4 <= 2 ** 28) {
            naive = await measure(async () => (await attentionNaive(q, k, v, { causal })).dispose(), long ? 0 : minTime, long ? 2 : 3, 1);
            naiveMem = await rssGrowth(async () => (await attentionNaive(q, k, v, { causal })).dispose());
          }
          q.dispose(); k.dispose(); v.dispose();
          const gflops = flops / (s.medianMs * 1e6);
          const outMiB = (t * d * h * 4) / 2 ** 20;
          const r = {
            t, d, heads: h, causal, median_ms: s.medianMs, p10_ms: s.p10Ms, p90_ms: s.p90Ms, spread_pct: s.spreadPct, reps: s.reps, gflops,
            faults_per_call: s.faultsPerCall, gc_median_ms: g.medianMs, gc_p10_ms: g.p10Ms, gc_p90_ms: g.p90Ms, gc_faults_per_call: g.faultsPerCall,
            pct_local_fma: (100 * gflops) / fmaPeak, pct_ref_avx512: (100 * gflops) / refPeak,
            extra_mib: Math.max(0, extra / 2 ** 20 - outMiB), naive_median_ms: naive?.medianMs ?? null,
            naive_extra_mib: Number.isFinite(naiveMem) ? Math.max(0, naiveMem / 2 ** 20 - outMiB) : null,
          };
          prefill.push(r);
          prows.push({
            t, d, heads: h, causal: String(causal), 'median ms': s.medianMs, 'p10-p90 %': s.spreadPct, 'GFLOP/s': gflops,
            '% FMA here': r.pct_local_fma, '% AVX512 ref': r.pct_ref_avx512, 'faults/call': s.faultsPerCall, "GC'd ms": g.medianMs,
            "GC'd faults": g.faultsPerCall, 'extra MiB': r.extra_mib,
            'naive ms': naive?.medianMs ?? NaN, 'naive MiB': r.naive_extra_mib ?? NaN,
          });
          log(table([prows[prows.length - 1]!], 9).split('\n')[2]!);
        }

  // --- decode ------------------------------------------------------------------
  const decode: Record<string, unknown>[] = [];
  const drows: Record<string, string | number>[] = [];
  const lens = quick ? [512, 8192] : [512, 1024, 2048, 4096, 8192, 16384];
  const configs: [string, number, number][] = quick ? [['gqa 32/8', 32, 8]] : [['mha 32/32', 32, 32], ['gqa 32/8', 32, 8]];
  const d = 128;
  log(`\ndecode (q = [1, hq, 1, ${d}] against a cache view; caches rotated over >= 256 MiB)`);
  const dHeader = { heads: '', cache: 0, kv: '', 'median ms': 0, 'p10-p90 %': 0, 'GB/s KV': 0, '% DRAM here': 0, 'x f32': 0 };
  const dh = table([dHeader], 9).split('\n');
  log(dh[0]!);
  log(dh[1]!);
  for (const [name, hq, hkv] of configs)
    for (const len of lens) {
      const f32ms: number[] = [];
      for (const dtype of ['f32', 'f16', 'i8'] as const) {
        const perLayer = 2 * hkv * len * (d * KV_BYTES[dtype] + (dtype === 'i8' ? 4 : 0));
        const layers = Math.min(64, Math.max(1, Math.ceil(2 ** 28 / perLayer)));
        const cache = new KVCache({ layers, kvHeads: hkv, headDim: d, maxSeq: len, dtype });
        const kv = Tensor.rand([1, hkv, len, d], { seed: 5 });
        for (let l = 0; l < layers; l++) await cache.append(l, kv, kv);
        kv.dispose();
        const q = Tensor.rand([1, hq, 1, d], { seed: 6 });
        const s = await measure(async (rep) => (await attention(q, cache.view(rep % layers), null, { causal: true })).dispose(), minTime, 10);
        q.dispose();
        cache.dispose();
        if (dtype === 'f32') f32ms.push(s.medianMs);
        const gbs = perLayer / (s.medianMs * 1e6);
        const r = {
          heads: name, hq, hkv, d, cache: len, kv: dtype, median_ms: s.medianMs, p10_ms: s.p10Ms, p90_ms: s.p90Ms, spread_pct: s.spreadPct,
          reps: s.reps, kv_bytes: perLayer, kv_gbs: gbs, pct_local_dram: (100 * gbs) / local.dramReadGBs, speedup_vs_f32: f32ms[0]! / s.medianMs,
        };
        decode.push(r);
        drows.push({ heads: name, cache: len, kv: dtype, 'median ms': s.medianMs, 'p10-p90 %': s.spreadPct, 'GB/s KV': gbs, '% DRAM here': r.pct_local_dram, 'x f32': r.speedup_vs_f32 });
        log(table([drows[drows.length - 1]!], 9).split('\n')[2]!);
      }
    }

  const out = {
    bench: 'attention', date: new Date().toISOString(), version: inf.version, host: os.hostname(), cpu: inf.cpu, threads,
    kernels: inf.kernels.attention, local_ceilings: local, reference_f32_avx512_gflops: refPeak,
    note: 'prefill GFLOP/s = 4*t^2*d*heads (x0.5 causal) / time of one attention() call from JS; gc_*: the same calls with the output left to the garbage collector; faults: minor page faults per call; extra MiB = peak RSS growth during a call minus its output; ' +
      'decode GB/s = key+value bytes of the view (int8: + scales) / time; naive = attentionNaive (materialised scores, one head at a time)',
    prefill, decode,
  };
  log(`\nsummary (${threads} threads; "% FMA here" uses the ${fmaName} FMA ceiling measured above, "% AVX512 ref" the reference machine's AVX-512 f32 peak):`);
  log(table(prows, 9));
  log('');
  log(table(drows, 9));
  const file = writeJson(opts.json ?? `bench-results/attention-${Date.now()}.json`, out);
  log(`\nwrote ${file}`);
  return out;
}
