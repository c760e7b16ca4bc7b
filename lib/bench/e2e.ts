// e2e.ts - the end-to-end benchmark (`npx sparq bench e2e`): a random-weight
// Llama of dim 768, 12 layers, 12 heads, hidden 2048, vocab 32000 (untied),
// written once as a llama2.c checkpoint and GGUF files (Q8_0, Q6_K, Q4_K_M,
// Q4_0) under the OS temp folder, run in f32, int8, the GGUF block types, int4
// and pruned: a 128-token prompt, then 64 greedy tokens (`--prompt N --tokens N`
// change them). `--model FILE` runs one file of the user's instead.
// Prints prompt and decode tokens/s, the decode bound (DRAM bandwidth /
// weight bytes read per token) and the fraction reached, and peak RSS.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { DecodeTiming } from '../model/model';
import { info, loadModel, pruneModel, quantizeModel, setNumThreads, type LoadModelOptions, type PruneModelOptions, type QuantizeModelOptions } from '../index';
import { loadNative } from '../native';
import { readGguf } from '../model/gguf';
import { writeRandomModel, type SynthConfig } from '../model/synth';
import { ceilingOf, table, writeJson } from './harness';

export interface E2eBenchOptions {
  threads?: number;
  quick?: boolean;
  json?: string;
  /** folder for the generated model files (default: <tmp>/sparq-bench-model) */
  dir?: string;
  /** a model file (GGUF, llama2.c, HF folder) to run instead of the generated suite */
  model?: string;
  /** prompt tokens (default 128) and generated tokens (default 64, 32 with quick) */
  prompt?: number;
  tokens?: number;
  /** also time one more generation per configuration by op class (native timers, sampling, JS <-> native) */
  profile?: boolean;
  /** with `model`: also run it as dense int8 and pruned (50% unstructured bitmask, 2:4), int8 values, and 2:4 with int4 values */
  pruned?: boolean;
  log?: (s: string) => void;
}

/** @internal the benchmark model (also run on the GPU by bench --device cuda) */
export const CONFIG: SynthConfig = { dim: 768, hidden: 2048, layers: 12, heads: 12, kvHeads: 12, vocab: 32000, maxSeq: 1024, seed: 42 };

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The tensors a decoded token multiplies in a GGUF file: every 2-D tensor but the embedding (unless it is the tied classifier). */
function ggufLinears(file: string) {
  const g = readGguf(file);
  const tied = !g.tensors.has('output.weight');
  return [...g.tensors.values()].filter((t) => t.dims.length === 2 && (tied || t.name !== 'token_embd.weight'));
}

/** Weight bytes a decoded token reads from a GGUF file (ggufLinears). */
export function ggufBytesPerToken(file: string): number {
  return ggufLinears(file).reduce((s, t) => s + t.bytes, 0);
}

/** Weights multiplied per token in a GGUF file: the elements of the same tensors as ggufBytesPerToken. */
export function ggufLinearParams(file: string): number {
  return ggufLinears(file).reduce((s, t) => s + t.dims[0]! * t.dims[1]!, 0);
}

/**
 * Bytes per token of a GGUF file's linears as int8 with one f32 scale per row: the
 * classifier dense, the layers' weights stored at `perWeight` bytes each (1 dense,
 * 0.5 + 1/8 pruned 50% as a bitmask or as 2:4 with 2-bit indices).
 */
function ggufInt8Bytes(file: string, perWeight: number): number {
  return ggufLinears(file).reduce((s, t) => {
    const classifier = t.name === 'output.weight' || t.name === 'token_embd.weight';
    return s + t.dims[0]! * t.dims[1]! * (classifier ? 1 : perWeight) + 4 * t.dims[1]!;
  }, 0);
}

/** The same with 2:4 int4 layers and a dense int4 (g64) classifier. */
function ggufNm24Int4Bytes(file: string): number {
  return ggufLinears(file).reduce((s, t) => {
    const classifier = t.name === 'output.weight' || t.name === 'token_embd.weight';
    return s + t.dims[0]! * t.dims[1]! * (classifier ? INT4_G64_BYTES : NM24_INT4_BYTES);
  }, 0);
}

// Pruned runs: layers pruned by magnitude per layer (the bench models' weights are random:
// no calibration to learn from), int8 values; the classifier stays dense int8.
const PRUNE_50: PruneModelOptions = { method: 'magnitude', sparsity: 0.5, format: 'bitmask' };
const PRUNE_24: PruneModelOptions = { method: 'magnitude', pattern: '2:4' };
// 2:4 with int4 values (f16 scales per 64 columns: 0.25 + 0.125 + 2/64 bytes per weight); the classifier dense int4 (g64)
const PRUNE_24_INT4: PruneModelOptions = { ...PRUNE_24, weights: 'int4', groupSize: 64 };
const NM24_INT4_BYTES = 0.25 + 0.125 + 2 / 64, INT4_G64_BYTES = 0.5 + 4 / 64;

type Run = [name: string, file: string, opts: LoadModelOptions, bytesPerToken: number, prune?: PruneModelOptions, quantize?: QuantizeModelOptions];
function runs(files: ReturnType<typeof modelFiles>, c: SynthConfig, model?: string, pruned = false): Run[] {
  if (model) {
    const own: Run = [path.basename(model), model, {}, model.endsWith('.gguf') ? ggufBytesPerToken(model) : linearParams(c) * 4];
    if (!pruned) return [own];
    if (!model.endsWith('.gguf')) throw new TypeError('bench e2e: --pruned needs a GGUF --model');
    const int8: LoadModelOptions = { weights: 'int8' };
    return [own, ['int8 per-channel (quantized at load)', model, int8, ggufInt8Bytes(model, 1)],
      ['int8 pruned 50% unstructured (bitmask)', model, int8, ggufInt8Bytes(model, 0.5 + 1 / 8), PRUNE_50],
      ['int8 pruned 2:4 (nm)', model, int8, ggufInt8Bytes(model, 0.5 + 1 / 8), PRUNE_24],
      ['int4 pruned 2:4 (nm, int4 values g64)', model, {}, ggufNm24Int4Bytes(model), PRUNE_24_INT4]];
  }
  const linParams = linearParams(c), layerParams = linParams - c.vocab * c.dim, dim = c.dim;
  return [
    // name, file, options, weight bytes read per decoded token (linears; the embedding row is noise)
    ['f32 (llama2.c)', files.llama2c, { tokenizer: files.tokenizer, weights: 'f32' }, linParams * 4],
    ['int8 per-channel (llama2.c, quantized at load)', files.llama2c, { tokenizer: files.tokenizer, weights: 'int8' }, linParams * (1 + 4 / dim)],
    ['Q8_0 (GGUF)', files.q8, {}, ggufBytesPerToken(files.q8)],
    ['Q6_K (GGUF)', files.q6k, {}, ggufBytesPerToken(files.q6k)],
    ['Q4_K_M (GGUF)', files.q4km, {}, ggufBytesPerToken(files.q4km)],
    ['Q4_0 (GGUF)', files.q4_0, {}, ggufBytesPerToken(files.q4_0)],
    // pruned layers (PRUNE_50, PRUNE_24: 2-bit in-group indices per kept value); classifier dense int8
    ['int8 pruned 50% unstructured (bitmask)', files.llama2c, { tokenizer: files.tokenizer, weights: 'int8' },
      layerParams * (0.5 + 1 / 8) + c.vocab * dim * (1 + 4 / dim), PRUNE_50],
    ['int8 pruned 2:4 (nm)', files.llama2c, { tokenizer: files.tokenizer, weights: 'int8' },
      layerParams * (0.5 + 1 / 8) + c.vocab * dim * (1 + 4 / dim), PRUNE_24],
    ['int4 pruned 2:4 (nm, int4 values g64)', files.llama2c, { tokenizer: files.tokenizer, weights: 'f32' },
      layerParams * NM24_INT4_BYTES + c.vocab * dim * INT4_G64_BYTES, PRUNE_24_INT4],
    // 4-bit, groups of 32 (round to nearest), classifier included
    ['int4 group 32 (quantizeModel)', files.llama2c, { tokenizer: files.tokenizer }, linParams * (0.5 + 4 / 32), undefined, { weights: { bits: 4 } }],
  ];
}

function modelFiles(dir: string) {
  return {
    llama2c: path.join(dir, 'model.bin'), tokenizer: path.join(dir, 'tokenizer.bin'), q8: path.join(dir, 'model-q8_0.gguf'),
    q6k: path.join(dir, 'model-q6_k.gguf'), q4km: path.join(dir, 'model-q4_k_m.gguf'), q4_0: path.join(dir, 'model-q4_0.gguf'),
  };
}

/** @internal weights of every linear (the ones read per decoded token) */
export const linearParams = (c: SynthConfig) => {
  const kvd = (c.kvHeads * c.dim) / c.heads;
  return c.layers * (2 * c.dim * c.dim + 2 * kvd * c.dim + 3 * c.hidden * c.dim) + c.vocab * c.dim;
};
/** @internal n prompt ids spread over a vocabulary (past its first 259: control and byte tokens); llama.cpp's bench uses the same */
export function promptIds(n: number, vocab: number): number[] {
  return Array.from({ length: n }, (_, i) => (vocab > 518 ? 259 + ((i * 7919) % (vocab - 259)) : (i * 7919) % vocab));
}
/** @internal */
export const PROMPT = promptIds(128, CONFIG.vocab);

interface DecodeProfile {
  /** decode steps timed, wall ms from the prompt's end to the loop's end, ms in the sampler and awaiting steps */
  steps: number; wallMs: number; sampleMs: number; stepMs: number;
  /** native forward time per op class (sparq/profile.h), ns summed over the steps */
  native: Record<string, { ns: number; calls: number }>;
}

/** One configuration, in this process (the child side of benchE2e): prints one JSON line. */
export async function benchE2eChild(index: number, dir: string, quick: boolean, model?: string, promptLen = 128, tokens?: number, profile = false,
  pruned = false): Promise<void> {
  const [, file, o, , pruneOpts, quantOpts] = runs(modelFiles(dir), CONFIG, model, pruned)[index]!;
  const gen = tokens ?? (quick ? 32 : 64), reps = quick ? 2 : 3;
  const t0 = performance.now();
  let m = await loadModel(file, o);
  if (pruneOpts || quantOpts) {
    const p = pruneOpts ? await pruneModel(m, pruneOpts) : await quantizeModel(m, quantOpts!);
    m.dispose();
    m = p;
  }
  const load_s = (performance.now() - t0) / 1000;
  const pp: number[] = [], dec: number[] = [], faults: number[] = [];
  const native = loadNative();
  // one generation; its decode steps' minor page faults, and (profiled) its time per op class
  const generation = async (profiled: boolean): Promise<DecodeProfile> => {
    let f0 = 0, t0 = 0;
    const timing: DecodeTiming = {
      sampleMs: 0, stepMs: 0, steps: 0,
      start() {
        if (profiled) native.profile(true, true);
        f0 = process.resourceUsage().minorPageFault;
        t0 = performance.now();
      },
    };
    m._decodeTiming = timing;
    let n = 0;
    try {
      for await (const t of m.generate(promptIds(promptLen, m.config.vocab), { maxTokens: gen })) { void t; n++; }
    } finally {
      m._decodeTiming = undefined;
    }
    const wallMs = performance.now() - t0;
    faults.push((process.resourceUsage().minorPageFault - f0) / Math.max(1, timing.steps));
    const prof = profiled ? native.profile(false, true) : {};
    if (n !== gen) throw new Error(`generated ${n} tokens instead of ${gen}`);
    return { steps: timing.steps, wallMs, sampleMs: timing.sampleMs, stepMs: timing.stepMs, native: prof };
  };
  try {
    for (let r = 0; r < reps; r++) {
      await generation(false);
      pp.push(m.stats.promptTokensPerSec);
      dec.push(m.stats.decodeTokensPerSec);
    }
    const decode_profile = profile ? await generation(true) : undefined;
    if (profile) faults.pop();
    console.log(JSON.stringify({ load_s, pp, dec, faults_per_token: faults, peak_rss_mib: process.resourceUsage().maxRSS / 1024, native_mib: m.nativeBytes / 2 ** 20, decode_profile }));
  } finally {
    m.dispose();
  }
}

/** The per-class table of one profiled generation: us per decode step, % of the step, and
 *  for the linears the weight bytes per token over their time. */
function profileRows(p: DecodeProfile, bytesPerToken: number, dramGBs: number): Record<string, string | number>[] {
  const steps = Math.max(1, p.steps);
  const us = (ns: number) => ns / 1e3 / steps;
  const total = (p.wallMs * 1e3) / steps;
  const rows: Record<string, string | number>[] = [];
  const row = (what: string, t: number, note = '') => rows.push({ what, 'us/token': t, '% of token': (100 * t) / total, note });
  const nat = (k: string) => us(p.native[k]?.ns ?? 0);
  const linears = ['qkv', 'wo', 'ffn_up', 'ffn_down', 'classifier'];
  const others = ['attention', 'rope', 'norm', 'kv_store', 'heads', 'swiglu', 'residual', 'embed'];
  const lin = linears.reduce((a, k) => a + nat(k), 0);
  const gbs = bytesPerToken / (lin * 1e3);
  for (const k of linears) row(`linear ${k}`, nat(k));
  row('linears, all', lin, `${gbs.toFixed(1)} GB/s of weights = ${((100 * gbs) / dramGBs).toFixed(0)}% of DRAM read`);
  for (const k of others) row(k, nat(k));
  const forward = nat('forward');
  const listed = lin + others.reduce((a, k) => a + nat(k), 0);
  row('native, unlisted', forward - listed);
  row('  of the above: fork/join', nat('join'), 'starting parallel jobs, waiting for helpers');
  row('native forward', forward);
  row('JS <-> native', (p.stepMs * 1e3) / steps - forward, 'promise, libuv hand-off, argument checks');
  row('sampling', (p.sampleMs * 1e3) / steps);
  row('rest of the JS loop', total - (p.stepMs * 1e3 + p.sampleMs * 1e3) / steps, 'detokenizing, stop strings, yield');
  row('decode step', total, `${(1e6 / total).toFixed(1)} tok/s`);
  return rows;
}

/**
 * @internal Seconds to read `file` from the page cache through one reused 4 MiB
 * buffer (what `cat` does; the best of two reads, the first also warms the
 * cache): the floor a load is rated against. NaN for what is not a regular file.
 */
export function pageCacheReadSeconds(file: string): number {
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) return NaN;
  const buf = Buffer.allocUnsafe(4 << 20);
  let best = Infinity;
  for (let r = 0; r < 2; r++) {
    const fd = fs.openSync(file, 'r');
    try {
      const t0 = performance.now();
      for (let at = 0, n = 0; (n = fs.readSync(fd, buf, 0, buf.length, at)) > 0; at += n);
      best = Math.min(best, (performance.now() - t0) / 1000);
    } finally {
      fs.closeSync(fd);
    }
  }
  return best;
}

export async function benchE2e(opts: E2eBenchOptions = {}): Promise<unknown> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (opts.threads) setNumThreads(opts.threads);
  const inf = info();
  const dir = opts.dir ?? path.join(os.tmpdir(), 'sparq-bench-model');
  const c = CONFIG;
  const files = modelFiles(dir);
  const stamp = path.join(dir, 'config.json');
  if (!opts.model && (!fs.existsSync(stamp) || fs.readFileSync(stamp, 'utf8') !== JSON.stringify(c) || !Object.values(files).every((f) => fs.existsSync(f)))) {
    log(`writing a random ${c.dim}x${c.layers} model (llama2.c f32 + GGUF Q8_0, Q6_K, Q4_K_M, Q4_0) to ${dir} ...`);
    writeRandomModel(dir, c, ['llama2c', 'gguf-q8_0', 'gguf-q6_k', 'gguf-q4_k_m', 'gguf-q4_0']);
    fs.writeFileSync(stamp, JSON.stringify(c));
  }
  const linParams = linearParams(c);
  const params = linParams + c.vocab * c.dim;
  log(`sparq ${inf.version} end-to-end benchmark - ${inf.cpu.brand || inf.cpu.vendor}, ${inf.threads} threads; ${opts.model ? `model ${opts.model}` : `model ${(params / 1e6).toFixed(0)}M parameters`}`);
  const ceil = await loadNative().ceilings(opts.quick ? 256 * 2 ** 20 : 2 ** 30);
  log(`  DRAM read ${ceil.dramReadGBs.toFixed(1)} GB/s`);

  const promptLen = opts.prompt ?? 128;
  const gen = opts.tokens ?? (opts.quick ? 32 : 64);
  const reps = opts.quick ? 2 : 3;
  const runs_ = runs(files, c, opts.model, opts.pruned);
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  const profiles: [string, Record<string, string | number>[]][] = [];
  for (let i = 0; i < runs_.length; i++) {
    const [name, file, runOpts, bytesPerToken] = runs_[i]!;
    // prefill: 2 ops per weight per token (attention's share, ~1% at 512 tokens of a 1B model, left out)
    // against the ceiling of the path the linears take (f32 weights: the f32 FMA one)
    const params = file.endsWith('.gguf') ? ggufLinearParams(file) : opts.model ? NaN : linearParams(c);
    const f32 = runOpts.weights === 'f32';
    const peakGops = ceilingOf(ceil, f32 ? `f32-${inf.kernels.sgemm}` : inf.kernels.gemm_s8);
    const read_s = pageCacheReadSeconds(file);
    // each configuration in a fresh process, so its peak RSS is its own
    const child = spawnSync(process.execPath, [path.join(__dirname, '..', 'cli.js'), 'bench', 'e2e', '--child', String(i), '--dir', dir,
      ...(opts.quick ? ['--quick'] : []), ...(opts.threads ? ['--threads', String(opts.threads)] : []), ...(opts.model ? ['--model', opts.model] : []),
      '--prompt', String(promptLen), '--tokens', String(gen), ...(opts.profile ? ['--profile'] : []), ...(opts.pruned ? ['--pruned'] : [])],
      { encoding: 'utf8' });
    const line = child.stdout.trim().split('\n').pop() ?? '';
    if (child.status !== 0 || !line.startsWith('{')) throw new Error(`e2e run '${name}' failed: ${child.stderr || child.stdout}`);
    const m = JSON.parse(line) as { load_s: number; pp: number[]; dec: number[]; faults_per_token: number[]; peak_rss_mib: number; native_mib: number; decode_profile?: DecodeProfile };
    const bound = (ceil.dramReadGBs * 1e9) / bytesPerToken;
    const r = {
      name, load_s: m.load_s, page_cache_read_s: read_s, prompt_tokens: promptLen, generated_tokens: gen, reps,
      prompt_tok_s: median(m.pp), decode_tok_s: median(m.dec), prompt_tok_s_all: m.pp, decode_tok_s_all: m.dec,
      decode_bound_tok_s: bound, pct_of_bound: (100 * median(m.dec)) / bound, weight_bytes_per_token: bytesPerToken,
      prompt_gops: (median(m.pp) * 2 * params) / 1e9, prompt_pct_of_peak: (100 * median(m.pp) * 2 * params) / (peakGops * 1e9),
      prompt_peak: f32 ? `f32 ${inf.kernels.sgemm}` : `int8 ${inf.kernels.gemm_s8}`,
      peak_rss_mib: m.peak_rss_mib, native_mib: m.native_mib, faults_per_token: median(m.faults_per_token),
      decode_profile: m.decode_profile ? profileRows(m.decode_profile, bytesPerToken, ceil.dramReadGBs) : undefined,
    };
    results.push(r);
    rows.push({ model: name, 'load s': m.load_s, 'read s': read_s, 'prompt tok/s': r.prompt_tok_s, 'prompt % peak': r.prompt_pct_of_peak, 'decode tok/s': r.decode_tok_s, 'bound tok/s': bound,
      '% bound': r.pct_of_bound, 'faults/token': r.faults_per_token, 'peak RSS MiB': m.peak_rss_mib, 'weights+KV MiB': m.native_mib });
    log(table([rows[rows.length - 1]!]).split('\n')[2]!);
    if (r.decode_profile) profiles.push([name, r.decode_profile]);
  }
  for (const [name, p] of profiles) {
    log(`\ndecode profile, ${name} (one more generation of ${gen} tokens, timers on; us per decoded token):`);
    log(table(p));
  }
  log('');
  log(table(rows));
  const out = {
    bench: 'e2e', date: new Date().toISOString(), version: inf.version, host: os.hostname(), cpu: inf.cpu, threads: inf.threads,
    model: { ...c, params }, dram_read_gbs: ceil.dramReadGBs,
    note: `prompt ${promptLen} token ids, then ${gen} greedy tokens; tokens/s from model.stats (median of reps); bound = DRAM bandwidth / weight bytes per token; prompt % peak = prompt tok/s x 2 x linear weights / the measured ceiling of the path the linears take (int8 best ISA; f32 FMA for f32 weights; attention left out); read s: the file read from the page cache through a reused 4 MiB buffer (best of 2), the floor a load is rated against; each configuration runs in its own process: peak RSS is its high-water mark, weights+KV the native bytes the model holds; faults/token: minor page faults of the whole process per decode step (median of reps)${opts.profile ? '; decode_profile: us per decode step by op class (linears rated as weight bytes per token / their time), "join" being the part of the ops above spent starting parallel jobs and waiting for helpers' : ''}`,
    results,
  };
  const file = writeJson(opts.json ?? `bench-results/e2e-${Date.now()}.json`, out);
  log(`\nwrote ${file}`);
  return out;
}
