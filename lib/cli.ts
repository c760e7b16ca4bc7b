#!/usr/bin/env node
// cli.ts - `npx sparq <command>`:
//   sparq info                       CPU features, chosen kernels, threads, CUDA
//   sparq bench gemm [--quick] [--isa avx2,amx] [--groups 32,128] [--threads N] [--min-time S] [--json FILE]
//   sparq bench attention [--quick] [--threads N] [--min-time S] [--json FILE]
//   sparq bench e2e [--quick] [--model FILE [--pruned]] [--prompt N] [--tokens N] [--profile] [--threads N] [--json FILE]
//   sparq bench spmm [--quick] [--isa LIST] [--threads N] [--min-time S] [--json FILE]
//   sparq bench quants [--quick] [--types q4_k,q6_k] [--m 1,8] [--threads N] [--min-time S] [--json FILE]
//   sparq bench --device cuda [--quick] [--json FILE]
//   sparq generate --model PATH [--tokenizer PATH] --prompt TEXT [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--weights int8]
//   sparq chat --model PATH [--system TEXT] [--template FILE] [-n N] [--temperature T] ...
//   sparq eval --model PATH [--reference PATH] [--weights int8] [--prune SPEC] [--text FILE | --sample N] [--json]
//   sparq compress --model IN --out OUT [--quantize int8|int8:gN|int4:gN] [--gptq] [--prune SPEC] [--smoothquant A] [--calibration FILE] [--json]
//   sparq compress --model IN --out OUT.gguf --quantize q4_k_m|q4_0|q8_0|q6_k|... [--json]
//   sparq serve --model PATH [--port 8080] [--host 127.0.0.1] [--max-sequences 8] [--queue N] [--api-key KEY] ...
//   sparq bench serve [--model FILE] [--streams 1,2,4,8,16] [--tokens N] [--duration S] [--soak S] [--json FILE]
import * as fs from 'node:fs';
import { evaluate, info, ISAS, loadModel, pruneModel, quantizeModel, saveModel, setNumThreads, type IsaName, type Model, type PruneModelOptions, type QuantizeModelOptions } from './index';
import { benchAttention } from './bench/attention';
import { readBoundedFile } from './model/files';
import { GGUF_WRITE_TYPES } from './model/gguf';
import { writeGgufModel } from './model/gguf_write';
import { benchCuda } from './bench/cuda';
import { benchE2e, benchE2eChild } from './bench/e2e';
import { benchGemm } from './bench/gemm';
import { benchQuants } from './bench/quants';
import { benchSpmm } from './bench/spmm';
import { benchServe } from './bench/serve';
import { serve } from './serve/server';

const USAGE = `usage:
  sparq info
  sparq bench gemm [--quick] [--isa LIST] [--groups 32,128] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq bench attention [--quick] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq bench e2e [--quick] [--model FILE [--pruned]] [--prompt N] [--tokens N] [--profile] [--threads N] [--json FILE]
  sparq bench spmm [--quick] [--isa LIST] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq bench quants [--quick] [--types q4_0,q4_k,...] [--m 1,8,128] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq bench serve [--model FILE] [--tokenizer PATH] [--streams 1,2,4,8,16] [--tokens N] [--duration SECONDS] [--soak SECONDS]
                    [--max-sequences N] [--json FILE]
  sparq bench --device cuda [--quick] [--json FILE]   GPU kernels and the 110M model on the GPU
  sparq generate --model PATH [--tokenizer PATH] [--prompt TEXT] [-n N] [--temperature T] [--top-k K]
                 [--top-p P] [--seed S] [--weights f32|int8] [--max-seq N]
  sparq chat --model PATH [--system TEXT] [--template FILE] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
             [--weights f32|int8] [--max-seq N]   interactive: Ctrl-C stops an answer, /reset, /exit
  sparq eval --model PATH [--reference PATH] [--tokenizer PATH] [--weights f32|int8] [--reference-weights f32|int8]
             [--prune wanda:0.5|magnitude:0.5|wanda:2:4|magnitude:4:8] [--quantize int8|int8:gN|int4:gN] [--gptq] [--smoothquant ALPHA]
             [--static minmax|percentile|mse] [--keep-float NAME,...] [--text FILE | --sample N] [--calibration FILE]
             [--context N] [--seed S] [--json]
  sparq compress --model IN --out OUT [--tokenizer PATH] [--quantize int8|int8:gN|int4:gN] [--gptq] [--prune SPEC] [--smoothquant ALPHA]
                 [--static minmax|percentile|mse] [--keep-float NAME,...] [--calibration FILE] [--json]
  sparq compress --model IN --out OUT.gguf --quantize q4_k_m|q4_0|q4_1|q5_0|q5_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k|iq4_nl|iq4_xs|f16|f32
  sparq serve --model PATH [--port 8080] [--host 127.0.0.1] [--max-sequences 8] [--queue N] [--max-seq N] [--api-key KEY]
              [--model-id ID] [--tokenizer PATH] [--template FILE] [--weights f32|int8] [--drain SECONDS] [--log]

  --isa       comma-separated int8 paths to run (${ISAS.join(', ')}); default: every path this CPU supports but ref
  --quick     fewer shapes and shorter timing
  compress    quantizes and/or prunes the model and writes it to one file (loadModel reads it back); with both,
              the pruned weights get int8 values (--quantize int8) or int4 ones (--quantize int4[:gN], default g64);
              calibration text: --calibration FILE (paragraphs) or 2048 tokens the model samples itself; an OUT ending in .gguf is a GGUF file (llama.cpp reads it) in a ggml type
  eval        scores the model (as loaded with --weights, pruned with --prune, quantized with --quantize) against the reference (default: the
              same file in f32): perplexity of both, mean / p50 / p90 / p99 KL divergence, top-1 agreement; the
              evaluation text is --text FILE, or N tokens the reference samples itself (--sample, default 2048)
  serve       an OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions (stream or not),
              GET /v1/models, GET /health; --max-sequences generations at once, --queue more waiting (default
              4 x max-sequences), then 429; --api-key (or SPARQ_API_KEY) requires Authorization: Bearer KEY on /v1;
              binds 127.0.0.1 unless --host says otherwise; SIGINT / SIGTERM finish running requests (--drain, 30 s)
  bench serve streaming clients against an in-process server: aggregate decode tokens/s, time to first token and
              inter-token latency (p50 / p99) per stream count; --soak S: 32 streams for S seconds, failures and RSS
environment: SPARQ_ISA forces the kernel path, SPARQ_THREADS sets the pool size`;

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`);
  return v;
}

function num(args: string[], name: string, alt?: string): number | undefined {
  const v = flag(args, name) ?? (alt ? flag(args, alt) : undefined);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number; got '${v}'`);
  return n;
}

async function generate(args: string[]): Promise<number> {
  const file = flag(args, '--model');
  if (!file) throw new Error('generate needs --model PATH');
  const weights = (flag(args, '--weights') ?? 'f32') as 'f32' | 'int8';
  const model = await loadModel(file, { tokenizer: flag(args, '--tokenizer'), weights, maxSeq: num(args, '--max-seq') });
  try {
    const prompt = flag(args, '--prompt') ?? '';
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    process.stdout.write(model.tokenizer.decode(model.tokenizer.encode(prompt)));
    for await (const t of model.generate(prompt, {
      maxTokens: num(args, '-n', '--max-tokens') ?? 128, temperature: num(args, '--temperature') ?? 0,
      topK: num(args, '--top-k'), topP: num(args, '--top-p'), seed: num(args, '--seed'), signal: ac.signal,
    })) process.stdout.write(t.text);
    const s = model.stats;
    await new Promise<void>((r) => process.stdout.write('\n', () => r()));
    console.error(`prompt: ${s.promptTokens} tokens, ${s.promptTokensPerSec.toFixed(1)} tokens/s; decode: ${s.generatedTokens} tokens, ${s.decodeTokensPerSec.toFixed(1)} tokens/s (${weights})`);
  } finally {
    model.dispose();
  }
  return 0;
}

// An interactive chat in the terminal: each line is a user turn, the answer streams;
// Ctrl-C stops the answer (at the prompt: quits), /reset forgets the conversation,
// /exit (or end of input) quits.
async function chatCmd(args: string[]): Promise<number> {
  const file = flag(args, '--model');
  if (!file) throw new Error('chat needs --model PATH');
  const tf = flag(args, '--template');
  const template = tf ? readBoundedFile(tf, 'chat', 'chat template', 1 << 20).toString('utf8') : undefined;
  const model = await loadModel(file, { weights: (flag(args, '--weights') ?? 'f32') as 'f32' | 'int8', maxSeq: num(args, '--max-seq') });
  const readline = await import('node:readline');
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  try {
    const conv = model.conversation({
      template, maxTokens: num(args, '-n', '--max-tokens') ?? 512, temperature: num(args, '--temperature') ?? 0.7,
      topK: num(args, '--top-k'), topP: num(args, '--top-p'), seed: num(args, '--seed'),
    });
    const system = flag(args, '--system');
    const reset = () => {
      conv.reset();
      if (system) conv.messages.push({ role: 'system', content: system });
    };
    reset();
    let answering: AbortController | null = null, closed = false;
    rl.on('SIGINT', () => {
      if (answering) answering.abort();
      else rl.close();
    });
    rl.on('close', () => { closed = true; });
    const ask = () => new Promise<string | null>((res) => {
      if (closed) return res(null);
      rl.once('close', () => res(null));
      rl.question('> ', res);
    });
    console.log(`chat with ${file} (Ctrl-C stops an answer, /reset forgets, /exit quits)`);
    for (;;) {
      const line = await ask();
      if (line === null || line.trim() === '/exit') break;
      if (line.trim() === '') continue;
      if (line.trim() === '/reset') {
        reset();
        console.log('(conversation reset)');
        continue;
      }
      answering = new AbortController();
      try {
        for await (const t of conv.send(line, { signal: answering.signal })) process.stdout.write(t.text);
        process.stdout.write('\n');
      } catch (e) {
        if (answering.signal.aborted) process.stdout.write('\n(stopped)\n');
        else console.error(`(${(e as Error).message})`);
      } finally {
        answering = null;
      }
    }
  } finally {
    rl.close();
    model.dispose();
  }
  return 0;
}

/** 'wanda:0.5', 'magnitude:0.7', 'wanda:2:4', 'magnitude:4:8' -> pruneModel options */
function pruneSpec(spec: string): PruneModelOptions {
  const m = /^(wanda|magnitude):(?:(0(?:\.\d+)?|1(?:\.0*)?)|(2:4|4:8))$/.exec(spec);
  if (!m) throw new Error(`--prune must look like wanda:0.5, magnitude:0.7, wanda:2:4 or magnitude:4:8; got '${spec}'`);
  return { method: m[1] as 'wanda' | 'magnitude', ...(m[3] ? { pattern: m[3] as '2:4' | '4:8' } : { sparsity: Number(m[2]) }) };
}

/** n tokens the model samples itself from BOS (seeded), in sequences of up to 512 */
async function sampleTokens(model: Model, n: number, seed: number): Promise<number[][]> {
  const out: number[][] = [];
  const len = Math.min(512, model.config.maxSeq);
  for (let got = 0, i = 0; got < n; i++) {
    const ids = [model.tokenizer.bos];
    for await (const t of model.generate(ids.slice(), { maxTokens: Math.min(len, n - got + 1) - 1, temperature: 1, seed: seed + i })) ids.push(t.id);
    if (ids.length < 2) continue;
    out.push(ids);
    got += ids.length;
  }
  return out;
}

function progressBar(label: string): (p: { done: number; total: number }) => void {
  if (!process.stderr.isTTY) return () => undefined;
  return ({ done, total }) => {
    const w = 30, f = total ? Math.round((w * done) / total) : w;
    process.stderr.write(`\r${label} [${'#'.repeat(f)}${'.'.repeat(w - f)}] ${done}/${total}${done === total ? '\n' : ''}`);
  };
}

/** --quantize int8 | int8:g32 | int4:g128, --smoothquant A, --static OBSERVER, --gptq, --keep-float a,b -> quantizeModel options */
async function quantizeSpec(args: string[], q: string, calibration: () => Promise<(string | number[])[]>): Promise<QuantizeModelOptions> {
  const m = /^int(8|4)(?::g(\d+))?$/.exec(q);
  if (!m) throw new Error(`--quantize must be int8, int8:gN or int4:gN (N: the group size); got '${q}'`);
  const bits = Number(m[1]) as 8 | 4;
  const o: QuantizeModelOptions = { weights: { bits, granularity: m[2] ? { groupSize: Number(m[2]) } : bits === 4 ? { groupSize: 32 } : 'per-channel' } };
  const sq = num(args, '--smoothquant'), st = flag(args, '--static'), kf = flag(args, '--keep-float');
  if (sq !== undefined) o.smoothQuant = { alpha: sq };
  if (st !== undefined) o.activations = { static: 'per-tensor', observer: st as 'minmax' | 'percentile' | 'mse' };
  if (kf !== undefined) o.keepFloat = kf.split(',');
  if (args.includes('--gptq')) o.gptq = {};
  if (sq !== undefined || st !== undefined || o.gptq) o.calibration = await calibration();
  return o;
}

async function compressCmd(args: string[]): Promise<number> {
  const file = flag(args, '--model'), out = flag(args, '--out');
  if (!file || !out) throw new Error('compress needs --model PATH and --out PATH');
  const spec = flag(args, '--prune'), qspec = flag(args, '--quantize');
  if (!spec && !qspec) throw new Error('compress needs --quantize and/or --prune');
  const json = args.includes('--json');
  const seed = num(args, '--seed') ?? 1;
  const t0 = performance.now();
  if (out.toLowerCase().endsWith('.gguf')) {
    // GGUF out: the linears in a ggml type (llama.cpp and sparq read it)
    if (spec || !qspec || !GGUF_WRITE_TYPES.includes(qspec.toLowerCase()))
      throw new Error(`compress to .gguf takes --quantize ${GGUF_WRITE_TYPES.join('|')} (and no --prune)`);
    const src = await loadModel(file, { tokenizer: flag(args, '--tokenizer') });
    try {
      const bar = progressBar('quantize');
      const r = await writeGgufModel(src, out, qspec, (p) => { if (p.stage === 'quantize') bar(p); });
      const before = fs.statSync(file).size, after = fs.statSync(out).size;
      const rep = { model: file, out, bytesIn: before, bytesOut: after, seconds: (performance.now() - t0) / 1000, gguf: r };
      if (json) console.log(JSON.stringify(rep, null, 2));
      else {
        console.log(`${'wrote'.padEnd(10)} ${out}`);
        console.log(`${'size'.padEnd(10)} ${(after / 2 ** 20).toFixed(2)} MiB (input ${(before / 2 ** 20).toFixed(2)} MiB)`);
        console.log(`${'tensors'.padEnd(10)} ${Object.entries(r.types).map(([t, n]) => `${n} ${t}`).join(', ')}`);
        console.log(`${'time'.padEnd(10)} ${rep.seconds.toFixed(1)} s`);
      }
    } finally {
      src.dispose();
    }
    return 0;
  }
  const src = await loadModel(file, { tokenizer: flag(args, '--tokenizer') });
  let m: Model | null = null;
  try {
    const calFile = flag(args, '--calibration');
    const calibration = async () => (calFile ? readBoundedFile(calFile, 'sparq', 'calibration text').toString('utf8').split(/\n\s*\n/).filter((t) => t.trim())
      : await sampleTokens(src, 2048, seed + 100000));
    if (spec) {
      const q4 = qspec ? /^int4(?::g(32|64|128))?$/.exec(qspec) : null;
      if (qspec && qspec !== 'int8' && !q4) throw new Error('--prune with --quantize takes int8 (one scale per row) or int4[:g32|g64|g128] (f16 scales per group of columns; default g64)');
      const values = q4 ? { weights: 'int4' as const, ...(q4[1] ? { groupSize: Number(q4[1]) } : {}) } : { weights: qspec ? 'int8' as const : 'f32' as const };
      m = await pruneModel(src, { ...pruneSpec(spec), ...values, calibration: await calibration(), onProgress: progressBar('prune   ') });
    } else {
      m = await quantizeModel(src, { ...(await quantizeSpec(args, qspec!, calibration)), onProgress: progressBar('quantize') });
    }
    await saveModel(m, out);
    const before = fs.statSync(file).size, after = fs.statSync(out).size;
    const r = { model: file, out, bytesIn: before, bytesOut: after, seconds: (performance.now() - t0) / 1000, prune: m.pruneReport, quantize: m.quantizeReport };
    if (json) console.log(JSON.stringify(r, null, 2));
    else {
      console.log(`${'wrote'.padEnd(10)} ${out}`);
      console.log(`${'size'.padEnd(10)} ${(after / 2 ** 20).toFixed(2)} MiB (input ${(before / 2 ** 20).toFixed(2)} MiB)`);
      if (m.pruneReport) console.log(`${'pruned'.padEnd(10)} ${m.pruneReport.method} ${m.pruneReport.pattern}: ${(100 * m.pruneReport.sparsity).toFixed(1)}% of linear weights zero`);
      if (m.quantizeReport) console.log(`${'quantized'.padEnd(10)} ${m.quantizeReport.weights}, activations ${m.quantizeReport.activations}`);
      console.log(`${'time'.padEnd(10)} ${r.seconds.toFixed(1)} s`);
    }
  } finally {
    m?.dispose();
    src.dispose();
  }
  return 0;
}

async function evalCmd(args: string[]): Promise<number> {
  const file = flag(args, '--model');
  if (!file) throw new Error('eval needs --model PATH');
  const refFile = flag(args, '--reference') ?? file;
  const tokenizer = flag(args, '--tokenizer');
  const weights = (flag(args, '--weights') ?? 'f32') as 'f32' | 'int8';
  const refWeights = (flag(args, '--reference-weights') ?? 'f32') as 'f32' | 'int8';
  const seed = num(args, '--seed') ?? 1;
  const json = args.includes('--json');
  const reference = await loadModel(refFile, { tokenizer, weights: refWeights });
  let candidate = await loadModel(file, { tokenizer, weights });
  try {
    const textFile = flag(args, '--text');
    const tokens = textFile ? undefined : await sampleTokens(reference, num(args, '--sample') ?? 2048, seed);
    const texts = textFile ? readBoundedFile(textFile, 'sparq', 'evaluation text').toString('utf8').split(/\n\s*\n/).filter((t) => t.trim()) : undefined;
    const spec = flag(args, '--prune'), qspec = flag(args, '--quantize');
    const calFile = flag(args, '--calibration');
    const calibration = async () => (calFile ? readBoundedFile(calFile, 'sparq', 'calibration text').toString('utf8').split(/\n\s*\n/).filter((t) => t.trim())
      : await sampleTokens(reference, 2048, seed + 100000));  // other samples than the evaluation's
    if (spec) {
      const pruned = await pruneModel(candidate, { ...pruneSpec(spec), calibration: await calibration(), onProgress: progressBar('prune') });
      candidate.dispose();
      candidate = pruned;
    } else if (qspec) {
      const q = await quantizeModel(candidate, { ...(await quantizeSpec(args, qspec, calibration)), onProgress: progressBar('quantize') });
      candidate.dispose();
      candidate = q;
    }
    const r = await evaluate(candidate, reference, { ...(texts ? { texts } : { tokens: tokens! }), contextLength: num(args, '--context'), onProgress: progressBar('eval ') });
    const what = `${file} (${spec ? `${weights}, pruned ${spec}` : qspec ? candidate.quantizeReport!.weights + ', ' + candidate.quantizeReport!.activations +
      (candidate.quantizeReport!.smoothQuantAlpha !== undefined ? `, SmoothQuant ${candidate.quantizeReport!.smoothQuantAlpha}` : '') : weights})`;
    if (json) {
      console.log(JSON.stringify({ candidate: what, reference: `${refFile} (${refWeights})`, ...r, prune: candidate.pruneReport, quantize: candidate.quantizeReport }, null, 2));
      return 0;
    }
    const rows: [string, string][] = [
      ['candidate', what], ['reference', `${refFile} (${refWeights})`],
      ['tokens', `${r.tokens} scored in ${r.windows} windows`],
      ['perplexity', `${r.perplexity.toFixed(4)} (reference ${r.referencePerplexity.toFixed(4)})`],
      ['mean KLD', `${r.meanKLD.toExponential(3)}  (p50 ${r.kldPercentiles.p50.toExponential(2)}, p90 ${r.kldPercentiles.p90.toExponential(2)}, p99 ${r.kldPercentiles.p99.toExponential(2)})`],
      ['top-1 agreement', `${(100 * r.top1Agreement).toFixed(2)}%`],
    ];
    if (candidate.pruneReport) rows.push(['pruned', `${(100 * candidate.pruneReport.sparsity).toFixed(1)}% of linear weights; ${(candidate.pruneReport.bytesSaved / 2 ** 20).toFixed(2)} MiB saved`]);
    for (const [k, v] of rows) console.log(`${k.padEnd(16)} ${v}`);
  } finally {
    candidate.dispose();
    reference.dispose();
  }
  return 0;
}

// The OpenAI-compatible server until SIGINT / SIGTERM: the first lets running requests
// finish (at most --drain seconds), a second quits at once.
async function serveCmd(args: string[]): Promise<number> {
  const file = flag(args, '--model');
  if (!file) throw new Error('serve needs --model PATH');
  const int = (name: string, min: number) => {
    const n = num(args, name);
    if (n !== undefined && (!Number.isInteger(n) || n < min)) throw new RangeError(`serve: ${name} must be an integer >= ${min}; got ${n}`);
    return n;
  };
  const port = int('--port', 0) ?? 8080;
  if (port > 65535) throw new RangeError(`serve: --port must be at most 65535; got ${port}`);
  const tf = flag(args, '--template');
  const template = tf ? readBoundedFile(tf, 'serve', 'chat template', 1 << 20).toString('utf8') : undefined;
  const host = flag(args, '--host') ?? '127.0.0.1';
  const apiKey = flag(args, '--api-key') ?? (process.env.SPARQ_API_KEY || undefined);
  const drain = num(args, '--drain') ?? 30;
  const server = await serve(file, {
    tokenizer: flag(args, '--tokenizer'), weights: (flag(args, '--weights') ?? 'f32') as 'f32' | 'int8', maxSeq: int('--max-seq', 1),
    maxSequences: int('--max-sequences', 1) ?? 8, queue: int('--queue', 0), port, host, apiKey, modelId: flag(args, '--model-id'), template,
    logger: args.includes('--log'),
  });
  const h = server.health();
  const mib = (b: number | undefined) => (b === undefined ? '?' : (b / 2 ** 20).toFixed(1));
  console.log(`sparq serving ${server.modelId} at ${server.url}/v1 - ${h.maxSequences} sequences of ${h.maxSeq} tokens, queue ${h.queueLimit}, ` +
    `${mib(h.nativeBytes)} MiB native${h.kvCacheBytes !== undefined ? ` (KV cache ${mib(h.kvCacheBytes)} MiB)` : ''}${apiKey ? ', API key required' : ''}`);
  if (!apiKey && !['127.0.0.1', 'localhost', '::1'].includes(host)) console.warn(`warning: listening on ${host} without an API key (--api-key or SPARQ_API_KEY)`);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) {
        console.error(`${sig} again: quitting now`);
        process.exit(130);
      }
      stopping = true;
      const { active, queued } = server.health();
      console.error(`${sig}: finishing ${active} running and ${queued} queued requests (at most ${drain} s; again to quit now)`);
      server.close({ drainSeconds: drain }).then(resolve, (e: unknown) => {
        console.error(`sparq: closing: ${(e as Error).message}`);
        resolve();
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
  console.error('stopped');
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === 'bench' && (argv.includes('--help') || argv.includes('-h'))) {  // not a long benchmark run by mistake
    console.log(USAGE);
    return 0;
  }
  if (cmd === 'info') {
    console.log(JSON.stringify(info(), null, 2));
    return 0;
  }
  if (cmd === 'bench' && (flag(argv, '--device') === 'cuda' || flag(argv, '--device') === 'cuda:0')) {
    await benchCuda({ quick: argv.includes('--quick'), json: flag(argv, '--json') });
    return 0;
  }
  if (cmd === 'bench' && sub === 'gemm') {
    const isaArg = flag(rest, '--isa');
    const isas = isaArg?.split(',').map((s) => s.trim()) as IsaName[] | undefined;
    for (const i of isas ?? []) if (!ISAS.includes(i)) throw new Error(`unknown ISA '${i}' (expected ${ISAS.join(', ')})`);
    const threads = flag(rest, '--threads');
    const minTime = flag(rest, '--min-time');
    const groupArg = flag(rest, '--groups');
    const groups = groupArg?.split(',').map((s) => Number(s.trim()));
    for (const g of groups ?? []) if (!Number.isInteger(g) || g < 4) throw new Error(`--groups takes group sizes such as 32,128; got '${groupArg}'`);
    await benchGemm({
      isas, groups, quick: rest.includes('--quick'), json: flag(rest, '--json'),
      threads: threads ? Number(threads) : undefined, minTime: minTime ? Number(minTime) : undefined,
    });
    return 0;
  }
  if (cmd === 'bench' && sub === 'attention') {
    const threads = flag(rest, '--threads');
    const minTime = flag(rest, '--min-time');
    await benchAttention({
      quick: rest.includes('--quick'), json: flag(rest, '--json'),
      threads: threads ? Number(threads) : undefined, minTime: minTime ? Number(minTime) : undefined,
    });
    return 0;
  }
  if (cmd === 'bench' && sub === 'e2e') {
    const threads = flag(rest, '--threads');
    const child = flag(rest, '--child');
    const count = (name: string): number | undefined => {
      const v = flag(rest, name);
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 65536) throw new RangeError(`bench e2e: ${name} must be an integer in [1, 65536]; got ${v}`);
      return n;
    };
    const prompt = count('--prompt'), tokens = count('--tokens');
    if (child !== undefined) {
      if (threads) setNumThreads(Number(threads));
      await benchE2eChild(Number(child), flag(rest, '--dir')!, rest.includes('--quick'), flag(rest, '--model'), prompt, tokens, rest.includes('--profile'),
        rest.includes('--pruned'));
      return 0;
    }
    await benchE2e({ quick: rest.includes('--quick'), json: flag(rest, '--json'), threads: threads ? Number(threads) : undefined, model: flag(rest, '--model'), prompt, tokens,
      profile: rest.includes('--profile'), pruned: rest.includes('--pruned') });
    return 0;
  }
  if (cmd === 'bench' && sub === 'spmm') {
    const threads = flag(rest, '--threads'), minTime = flag(rest, '--min-time');
    const isaArg = flag(rest, '--isa');
    const isas = isaArg?.split(',').map((s) => s.trim()) as IsaName[] | undefined;
    for (const i of isas ?? []) if (!ISAS.includes(i)) throw new Error(`unknown ISA '${i}' (expected ${ISAS.join(', ')})`);
    await benchSpmm({ quick: rest.includes('--quick'), json: flag(rest, '--json'), threads: threads ? Number(threads) : undefined,
      minTime: minTime ? Number(minTime) : undefined, isas });
    return 0;
  }
  if (cmd === 'bench' && sub === 'quants') {
    const threads = flag(rest, '--threads'), minTime = flag(rest, '--min-time'), types = flag(rest, '--types'), mArg = flag(rest, '--m');
    const ms = mArg?.split(',').map((s) => Number(s.trim()));
    for (const m of ms ?? []) if (!Number.isInteger(m) || m < 1) throw new Error(`--m takes row counts such as 1,8,128; got '${mArg}'`);
    await benchQuants({ quick: rest.includes('--quick'), json: flag(rest, '--json'), threads: threads ? Number(threads) : undefined,
      minTime: minTime ? Number(minTime) : undefined, types: types?.split(',').map((s) => s.trim()), ms });
    return 0;
  }
  if (cmd === 'bench' && sub === 'serve') {
    const list = flag(rest, '--streams');
    const streams = list?.split(',').map((s) => Number(s.trim()));
    for (const k of streams ?? []) if (!Number.isInteger(k) || k < 1) throw new Error(`--streams takes stream counts such as 1,2,4,8,16; got '${list}'`);
    const int = (name: string) => {
      const n = num(rest, name);
      if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new RangeError(`bench serve: ${name} must be a positive integer; got ${n}`);
      return n;
    };
    const duration = num(rest, '--duration'), soak = num(rest, '--soak');
    for (const [k, v] of [['--duration', duration], ['--soak', soak]] as const) if (v !== undefined && !(v > 0)) throw new RangeError(`bench serve: ${k} must be > 0 seconds`);
    await benchServe({ model: flag(rest, '--model'), tokenizer: flag(rest, '--tokenizer'), streams, tokens: int('--tokens'), duration, soak,
      maxSequences: int('--max-sequences'), json: flag(rest, '--json') });
    return 0;
  }
  if (cmd === 'serve') return serveCmd(argv.slice(1));
  if (cmd === 'generate') return generate(argv.slice(1));
  if (cmd === 'chat') return chatCmd(argv.slice(1));
  if (cmd === 'eval') return evalCmd(argv.slice(1));
  if (cmd === 'compress') return compressCmd(argv.slice(1));
  console.error(USAGE);
  return cmd === undefined || cmd === '--help' || cmd === 'help' ? 0 : 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`sparq: ${(e as Error).message}`);
    process.exit(1);
  },
);
