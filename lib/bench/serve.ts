// serve.ts - the serving benchmark (`npx sparq bench serve`): starts the HTTP
// server in this process on a free port, then for each stream count K runs K
// clients that send streaming /v1/completions requests back to back for a
// while (greedy, `--tokens` each), and reports aggregate decode tokens/s, time
// to first token and inter-token latency (p50 / p99). `--soak S` then runs 32
// streams for S seconds and reports failed requests and the RSS over time.
// Without --model it serves a random-weight Llama of stories15M's shape (dim
// 288, 6 layers, vocab 32000) written once under the OS temp folder.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { info } from '../index';
import { serve, type ModelServer } from '../serve/server';
import { writeRandomModel, type SynthConfig } from '../model/synth';
import { table, writeJson } from './harness';

export interface ServeBenchOptions {
  /** a model file to serve (default: a random-weight model of stories15M's shape) */
  model?: string;
  tokenizer?: string;
  /** concurrent streams to measure (default 1, 2, 4, 8, 16) */
  streams?: number[];
  /** max_tokens of each request (default 64) */
  tokens?: number;
  /** seconds each stream count runs (default 10) */
  duration?: number;
  /** seconds of the 32-stream soak after the sweep (default 0: none) */
  soak?: number;
  /** streams of the soak (default 32) */
  soakStreams?: number;
  /** the server's maxSequences (default: the largest stream count) */
  maxSequences?: number;
  json?: string;
  log?: (s: string) => void;
}

/** @internal the model served without --model */
export const SERVE_CONFIG: SynthConfig = { dim: 288, hidden: 768, layers: 6, heads: 6, kvHeads: 6, vocab: 32000, maxSeq: 512, seed: 7 };

function benchModel(): string {
  const dir = path.join(os.tmpdir(), 'sparq-bench-serve-model');
  const stamp = path.join(dir, 'config.json');
  const want = JSON.stringify(SERVE_CONFIG);
  const file = path.join(dir, 'model-f32.gguf');
  if (!fs.existsSync(stamp) || fs.readFileSync(stamp, 'utf8') !== want || !fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    const made = writeRandomModel(dir, SERVE_CONFIG, ['gguf-f32']);
    fs.renameSync(made['gguf-f32']!, file);
    fs.writeFileSync(stamp, want);
  }
  return file;
}

/** What one streamed request saw (ms since its start for each piece of text). */
interface Trace {
  ok: boolean;
  status: number;
  error?: string;
  startMs: number;
  chunks: number[];
  tokens: number;
}

/** Sends one streaming completion and records when each piece of text arrived. */
function streamOnce(agent: http.Agent, url: URL, body: string, t0: number): Promise<Trace> {
  return new Promise((resolve) => {
    const startMs = performance.now() - t0;
    const tr: Trace = { ok: false, status: 0, startMs, chunks: [], tokens: 0 };
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      tr.status = res.statusCode ?? 0;
      let buf = '', done = false;
      res.setEncoding('utf8');
      res.on('data', (s: string) => {
        buf += s;
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ')) continue;
          const data = ev.slice(6);
          if (data === '[DONE]') {
            done = true;
            continue;
          }
          try {
            const j = JSON.parse(data) as { error?: { message: string }; choices?: { text?: string }[]; usage?: { completion_tokens: number } | null };
            if (j.error) tr.error = j.error.message;
            if (j.choices?.[0]?.text) tr.chunks.push(performance.now() - t0 - startMs);
            if (j.usage) tr.tokens = j.usage.completion_tokens;
          } catch (e) {
            tr.error = `bad event: ${(e as Error).message}`;
          }
        }
      });
      res.on('end', () => {
        tr.ok = tr.status === 200 && done && !tr.error;
        if (!tr.ok && !tr.error) tr.error = tr.status === 200 ? 'the stream ended without [DONE]' : `HTTP ${tr.status}: ${buf.slice(0, 200)}`;
        resolve(tr);
      });
      res.on('error', (e) => {
        tr.error = e.message;
        resolve(tr);
      });
    });
    req.on('error', (e) => {
      tr.error = e.message;
      resolve(tr);
    });
    req.end(body);
  });
}

/** K clients sending requests back to back until `seconds` pass; returns every trace and the wall time. */
async function drive(server: ModelServer, k: number, seconds: number, tokens: number, onTick?: () => void): Promise<{ traces: Trace[]; wallMs: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: k });
  const url = new URL(`${server.url}/v1/completions`);
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  const traces: Trace[] = [];
  const client = async (c: number) => {
    for (let r = 0; performance.now() < until; r++) {
      const body = JSON.stringify({ prompt: `Once upon a time, client ${c} said`, max_tokens: tokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
      traces.push(await streamOnce(agent, url, body, t0));
      onTick?.();
    }
  };
  await Promise.all(Array.from({ length: k }, (_, c) => client(c)));
  const wallMs = performance.now() - t0;
  agent.destroy();
  return { traces, wallMs };
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

function summarize(k: number, traces: Trace[], wallMs: number) {
  const ok = traces.filter((t) => t.ok);
  const ttft = ok.filter((t) => t.chunks.length).map((t) => t.chunks[0]!).sort((a, b) => a - b);
  const itl = ok.flatMap((t) => t.chunks.slice(1).map((c, i) => c - t.chunks[i]!)).sort((a, b) => a - b);
  const tokens = ok.reduce((s, t) => s + t.tokens, 0);
  // one stream's own rate: its tokens after the first over the time they took
  const perStream = ok.filter((t) => t.chunks.length > 1).map((t) => (t.tokens - 1) / ((t.chunks[t.chunks.length - 1]! - t.chunks[0]!) / 1000)).sort((a, b) => a - b);
  return {
    streams: k, requests: traces.length, failed: traces.length - ok.length, tokens, wall_s: wallMs / 1000,
    decode_tok_s: tokens / (wallMs / 1000), per_stream_tok_s_p50: pct(perStream, 0.5),
    ttft_ms_p50: pct(ttft, 0.5), ttft_ms_p99: pct(ttft, 0.99), itl_ms_p50: pct(itl, 0.5), itl_ms_p99: pct(itl, 0.99),
    errors: [...new Set(traces.filter((t) => !t.ok).map((t) => t.error ?? 'failed'))].slice(0, 5),
  };
}

export async function benchServe(opts: ServeBenchOptions = {}): Promise<unknown> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const streams = opts.streams ?? [1, 2, 4, 8, 16];
  for (const k of streams) if (!Number.isInteger(k) || k < 1 || k > 1024) throw new RangeError(`bench serve: stream counts must be integers in [1, 1024]; got ${k}`);
  const tokens = opts.tokens ?? 64, duration = opts.duration ?? 10, soak = opts.soak ?? 0, soakStreams = opts.soakStreams ?? 32;
  const file = opts.model ?? benchModel();
  const maxSequences = opts.maxSequences ?? Math.max(...streams);
  const inf = info();
  const server = await serve(file, {
    port: 0, maxSequences, queue: Math.max(4 * maxSequences, soakStreams, ...streams), modelId: opts.model ? path.basename(file) : 'random-stories15M-shape',
    ...(opts.tokenizer ? { tokenizer: opts.tokenizer } : {}),
  });
  log(`sparq ${inf.version} serving benchmark - ${inf.cpu.brand || inf.cpu.vendor}, ${inf.threads} threads; model ${opts.model ?? `random (dim ${SERVE_CONFIG.dim}, ${SERVE_CONFIG.layers} layers, vocab ${SERVE_CONFIG.vocab})`}, ` +
    `maxSequences ${maxSequences}; ${tokens} greedy tokens per request, ${duration} s per stream count`);
  const results: ReturnType<typeof summarize>[] = [];
  let soakResult: Record<string, unknown> | undefined;
  try {
    await drive(server, 1, 0.5, Math.min(tokens, 8));  // warm-up
    const rows: Record<string, string | number>[] = [];
    for (const k of streams) {
      const { traces, wallMs } = await drive(server, k, duration, tokens);
      const r = summarize(k, traces, wallMs);
      results.push(r);
      rows.push({ streams: k, requests: r.requests, failed: r.failed, 'decode tok/s': r.decode_tok_s, 'tok/s/stream': r.per_stream_tok_s_p50,
        'TTFT p50 ms': r.ttft_ms_p50, 'TTFT p99 ms': r.ttft_ms_p99, 'ITL p50 ms': r.itl_ms_p50, 'ITL p99 ms': r.itl_ms_p99 });
      const lines = table(rows, 8).split('\n');
      if (rows.length === 1) log(lines.slice(0, 2).join('\n'));
      log(lines[lines.length - 1]!);
      for (const e of r.errors) log(`  error: ${e}`);
    }
    if (soak > 0) {
      log(`\nsoak: ${soakStreams} streams for ${soak} s`);
      global.gc?.();
      const rss0 = process.memoryUsage.rss();
      let peak = rss0;
      const samples: [number, number][] = [];
      const t0 = performance.now();
      const timer = setInterval(() => {
        const r = process.memoryUsage.rss();
        peak = Math.max(peak, r);
        samples.push([(performance.now() - t0) / 1000, r]);
      }, 1000);
      const { traces, wallMs } = await drive(server, soakStreams, soak, tokens);
      clearInterval(timer);
      global.gc?.();
      const rss1 = process.memoryUsage.rss();
      const s = summarize(soakStreams, traces, wallMs);
      soakResult = { ...s, rss_start_mib: rss0 / 2 ** 20, rss_peak_mib: peak / 2 ** 20, rss_end_mib: rss1 / 2 ** 20, rss_samples: samples.map(([t, r]) => [t, r / 2 ** 20]) };
      log(table([{ streams: soakStreams, seconds: soak, requests: s.requests, failed: s.failed, 'decode tok/s': s.decode_tok_s, 'TTFT p99 ms': s.ttft_ms_p99,
        'RSS start MiB': rss0 / 2 ** 20, 'RSS peak MiB': peak / 2 ** 20, 'RSS end MiB': rss1 / 2 ** 20 }]));
      for (const e of s.errors) log(`  error: ${e}`);
    }
  } finally {
    await server.close({ drainSeconds: 5 });
  }
  const out = {
    bench: 'serve', date: new Date().toISOString(), version: inf.version, host: os.hostname(), cpu: inf.cpu, threads: inf.threads,
    model: opts.model ?? { random: SERVE_CONFIG }, maxSequences, tokens_per_request: tokens, seconds_per_point: duration,
    note: 'the server and its clients in one process (loopback HTTP); each client sends streaming /v1/completions requests back to back (greedy, ' +
      'include_usage); decode tok/s = completion tokens of the successful requests / wall time; TTFT from sending a request to its first text event; ' +
      'ITL between consecutive text events of a request; tok/s/stream: median over requests of (tokens - 1) / (last - first text event)',
    results, soak: soakResult,
  };
  const f = writeJson(opts.json ?? `bench-results/serve-${Date.now()}.json`, out);
  log(`\nwrote ${f}`);
  return out;
}
