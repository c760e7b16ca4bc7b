// cuda.ts - `npx sparq bench --device cuda`: the GPU kernels and the model.
//  - int8 GEMM (activations already int8, weight per channel): TOPS and % of
//    the GPU's dense int8 tensor-core peak (SMs x boost clock x int8 ops per
//    clock per SM of its architecture);
//  - attention prefill (causal, f16 and f32) in TFLOP/s and % of the dense f16
//    tensor-core peak, beside FlashAttention-2's published 50-73% of peak on
//    A100 (forward, its paper); decode over a long cache (split-KV);
//  - decode tokens/s of the 110M model of `bench e2e` (int8 and f32 weights)
//    against the HBM bound: bandwidth / weight bytes read per token.
// Kernel timings come from CUDA events around back-to-back calls on the
// device (no host round trip); the model is timed from JS, as users see it.
import { info, loadModel } from '../index';
import { loadNative } from '../native';
import { writeRandomModel } from '../model/synth';
import { CONFIG as MODEL, PROMPT as prompt, linearParams } from './e2e';
import { measure, table, writeJson } from './harness';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface CudaBenchOptions {
  quick?: boolean;
  json?: string;
  log?: (s: string) => void;
}

// dense ops per clock per SM (multiply-add = 2 ops) on the tensor cores
const INT8_OPS_PER_CLK: Record<string, number> = { '8.0': 4096, '8.6': 2048, '8.7': 2048, '8.9': 2048, '9.0': 8192 };
const F16_OPS_PER_CLK: Record<string, number> = { '8.0': 2048, '8.6': 1024, '8.7': 1024, '8.9': 1024, '9.0': 4096 };

export async function benchCuda(opts: CudaBenchOptions = {}): Promise<void> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const ci = info().cuda;
  if (!ci.compiled) throw new Error('bench --device cuda: this build has no CUDA kernels (built without nvcc)');
  if (ci.devices === 0) throw new Error(`bench --device cuda: no CUDA device (${ci.error ?? 'none found'})`);
  const d = ci.deviceList[0]!;
  const cc = `${d.major}.${d.minor}`;
  const ghz = d.clockMHz / 1000;
  const int8Peak = ((INT8_OPS_PER_CLK[cc] ?? 0) * d.sms * ghz) / 1000;  // TOPS
  const f16Peak = ((F16_OPS_PER_CLK[cc] ?? 0) * d.sms * ghz) / 1000;    // TFLOP/s
  log(`device: ${d.name} (sm_${d.major}${d.minor}, ${d.sms} SMs, ${d.clockMHz.toFixed(0)} MHz, ${(d.memoryBytes / 2 ** 30).toFixed(0)} GiB, ~${d.bandwidthGBs.toFixed(0)} GB/s)`);
  log(`peaks from the clock: int8 tensor cores ${int8Peak.toFixed(0)} TOPS dense, f16 ${f16Peak.toFixed(0)} TFLOP/s${int8Peak ? '' : ' (unknown architecture: % columns left empty)'}`);
  const nat = loadNative();
  const reps = opts.quick ? 5 : 50;
  const pct = (v: number, peak: number) => (peak > 0 ? (100 * v) / peak : NaN);

  log('\nint8 GEMM (C = A . W^T, per-channel scales, f32 out):');
  const gemm: Record<string, string | number>[] = [];
  const shapes: [number, number, number][] = opts.quick
    ? [[1, 4096, 4096], [4096, 4096, 4096]]
    : [[1, 4096, 4096], [8, 4096, 4096], [128, 4096, 4096], [2048, 4096, 4096], [4096, 4096, 4096], [8192, 8192, 8192]];
  for (const [m, n, k] of shapes) {
    const ms = await nat.cudaBenchGemm(m, n, k, 0, reps);
    const tops = (2 * m * n * k) / (ms * 1e-3) / 1e12;
    const gbs = (n * k + m * k + 4 * m * n) / (ms * 1e-3) / 1e9;
    const row = { m, n, k, ms, TOPS: tops, '% int8 peak': pct(tops, int8Peak), 'GB/s': gbs, '% HBM': pct(gbs, d.bandwidthGBs) };
    gemm.push(row);
    log(table([row], 9).split('\n').slice(gemm.length === 1 ? 0 : 2).join('\n'));
  }

  log('\nattention (b = 1, 32 heads, d = 128):');
  const att: Record<string, string | number>[] = [];
  const lens = opts.quick ? [1024] : [1024, 4096, 8192];
  for (const t of lens) {
    for (const [name, qt, kt] of [['f16', 1, 1], ['f32', 0, 0]] as const) {
      const ms = await nat.cudaBenchAttention(1, 32, 32, t, t, 128, qt, kt, true, Math.max(2, reps >> 2));
      const flops = (4 * 32 * t * t * 128) / 2;  // causal: half the score matrix
      const tf = flops / (ms * 1e-3) / 1e12;
      const row = { case: `prefill causal ${name}`, t, ms, 'TFLOP/s': tf, '% f16 peak': pct(tf, f16Peak) };
      att.push(row);
      log(table([row], 9).split('\n').slice(att.length === 1 ? 0 : 2).join('\n'));
    }
  }
  for (const [name, kt] of [['f16 cache', 1], ['int8 cache', 3]] as const) {
    const tk = 8192;
    const ms = await nat.cudaBenchAttention(1, 32, 8, 1, tk, 128, 0, kt, true, reps);
    const bytes = 2 * 8 * tk * 128 * (kt === 3 ? 1 : 2);
    const gbs = bytes / (ms * 1e-3) / 1e9;
    const row = { case: `decode ${name} (GQA 32/8)`, t: tk, ms, 'TFLOP/s': (4 * 32 * tk * 128) / (ms * 1e-3) / 1e12, '% f16 peak': NaN, 'GB/s': gbs, '% HBM': pct(gbs, d.bandwidthGBs) };
    att.push(row);
    log(table([row], 9).split('\n').slice(2).join('\n'));
  }
  log('FlashAttention-2 (its paper): forward at 50-73% of the f16 tensor-core peak on A100.');

  log('\nend to end, 110M model (dim 768, 12 layers, vocab 32000), 128-token prompt then greedy decode:');
  const dir = path.join(os.tmpdir(), 'sparq-bench-model');
  const file = path.join(dir, 'model.bin'), tok = path.join(dir, 'tokenizer.bin');
  if (!fs.existsSync(file) || !fs.existsSync(tok)) writeRandomModel(dir, MODEL, ['llama2c']);
  const linParams = linearParams(MODEL);
  const e2e: Record<string, string | number>[] = [];
  for (const [name, weights, bytes] of [['int8', 'int8', linParams * (1 + 4 / MODEL.dim)], ['f32', 'f32', linParams * 4]] as const) {
    const m = await loadModel(file, { tokenizer: tok, weights, device: 'cuda' });
    try {
      const steps = opts.quick ? 16 : 64;
      const pre = await measure(async () => { m.reset(); await m.forward(prompt); }, 0.5, 3, 1);
      m.reset();
      await m.forward(prompt);
      // a fixed number of steps (the context holds maxSeq = 1024 positions)
      const dec = await measure(async (i) => { await m.forward([259 + (i % 1000)]); }, 0, steps, 2);
      const tps = 1000 / dec.medianMs;
      const bound = (d.bandwidthGBs * 1e9) / bytes;
      const row = { weights: name, 'prompt tok/s': (128 * 1000) / pre.medianMs, 'decode tok/s': tps, 'spread %': dec.spreadPct, 'HBM bound tok/s': bound, '% of bound': pct(tps, bound) };
      e2e.push(row);
      log(table([row], 9).split('\n').slice(e2e.length === 1 ? 0 : 2).join('\n'));
    } finally {
      m.dispose();
    }
  }
  if (opts.json) {
    const f = writeJson(opts.json, { date: new Date().toISOString(), device: d, peaks: { int8Tops: int8Peak, f16Tflops: f16Peak }, gemm, attention: att, e2e });
    log(`\nJSON: ${f}`);
  }
}
