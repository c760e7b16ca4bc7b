// helpers.ts - independent references and utilities for the tests.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');

/** The real stories260K checkpoint beside the checkout (../shared/models), never copied into the repo. */
export const STORIES_DIR = path.resolve(ROOT, '..', 'shared', 'models', 'stories260K');
export const STORIES_MODEL = path.join(STORIES_DIR, 'stories260K.bin'), STORIES_TOK = path.join(STORIES_DIR, 'tok512.bin');
export const haveStories = fs.existsSync(STORIES_MODEL) && fs.existsSync(STORIES_TOK);

/** For the tests that run on stories260K: without it they skip, saying so, unless
 * SPARQ_EXPECT_MODEL=1 (CI sets it): then they fail, so a missing model cannot pass unseen. */
export function needStories(ctx: Mocha.Context): void {
  if (haveStories) return;
  const why = `the stories260K model is not at ${STORIES_DIR}`;
  if (process.env.SPARQ_EXPECT_MODEL === '1') throw new Error(`${why} (SPARQ_EXPECT_MODEL=1)`);
  console.log(`      (skipped: ${why})`);
  ctx.skip();
}

/** A memory counter once the finalizers of earlier garbage have run: Node-API
 * finalizers run after global.gc() returns, so one read right after it races them. */
export async function settled(read: () => number): Promise<number> {
  let prev = -1;
  for (let i = 0; i < 50; i++) {
    (global as { gc?: () => void }).gc?.();
    await new Promise((r) => setImmediate(r));
    const now = read();
    if (now === prev) return now;
    prev = now;
  }
  return prev;
}

/**
 * The tests' random numbers: fresh inputs every run, from a seed printed once so that a
 * failure can be repeated (SPARQ_SEED=N npm test). mulberry32: 2^32 states, plenty for inputs.
 */
export const SEED = process.env.SPARQ_SEED !== undefined ? Number(process.env.SPARQ_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
console.log(`  random inputs: seed ${SEED} (SPARQ_SEED=${SEED} repeats them for the same test files and --grep)`);
let rngState = SEED;
/** Uniform in [0, 1), from SEED. */
export function random(): number {
  rngState = (rngState + 0x6d2b79f5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
// and every other draw in the test process (Tensor.rand without a seed takes its seed from
// Math.random): the same tests with the same SPARQ_SEED see the same inputs
Math.random = random;

export function randI8(n: number, lo = -128, hi = 127): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + Math.floor(random() * (hi - lo + 1));
  return a;
}

export function randn(n: number, std = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - random(), v = random();
    a[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return a;
}

/** exact int32 a[m,k] . b[n,k]^T (entries listed, or all) */
export function refMatmulI8(a: Int8Array, b: Int8Array, m: number, n: number, k: number): Int32Array {
  const c = new Int32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += a[i * k + q]! * b[j * k + q]!;
      c[i * n + j] = s;
    }
  return c;
}

/** f64 x[m,k] . w[n,k]^T + bias */
export function refLinear(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, m: number, n: number, k: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = bias ? bias[j]! : 0;
      for (let q = 0; q < k; q++) s += x[i * k + q]! * w[j * k + q]!;
      y[i * n + j] = s;
    }
  return y;
}

export function relErr(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const o = out[i]!;
    if (!Number.isFinite(o)) return Infinity;
    num += (o - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return Math.sqrt(num / (den || 1));
}

/** round half to even, as the native quantizers (nearbyint) do */
export function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : r;
}

/** Runs a snippet of TypeScript in a child process (fresh native state, custom env). */
export function runChild(code: string, env: Record<string, string> = {}, cwd = ROOT, nodeArgs: string[] = []): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...nodeArgs, '--import', 'tsx', '-e', code], {
    cwd,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 120000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** describe(`${title} on the ${isa} path`) for every path; paths this CPU/OS cannot run are skipped, saying so. */
export function describeEachIsa(title: string, body: (isa: string) => void): void {
  // required lazily so that helpers.ts loads without the addon
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { ISAS, info, setIsa } = require('../lib/index') as typeof import('../lib/index');
  const supported = info().cpu.supportedIsas as string[], emulated = info().cpu.emulatedIsas as string[];
  const best = info().kernels.gemm_s8;
  for (const isa of ISAS) {
    describe(`${title} on the ${isa} path${emulated.includes(isa) ? ' (emulated intrinsics)' : ''}`, function () {
      this.timeout(600000);
      before(function () {
        if (!supported.includes(isa)) {
          console.log(`      (skipped: this CPU/OS cannot run ${isa}; supported here: ${supported.join(', ')})`);
          this.skip();
        }
        setIsa(isa);
      });
      after(() => setIsa(best));
      body(isa);
    });
  }
}

/** Symmetric int8 per row as the kernels quantize activations: s = max|v| / 127 (1 for all zeros),
 *  q = rint(v * (1 / s)) clamped to [-127, 127], in f32 steps. */
export function quantRowsRef(v: ArrayLike<number>, rows: number, k: number): { q: Int32Array; s: Float32Array } {
  const f = Math.fround;
  const q = new Int32Array(rows * k), s = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    let mx = 0;
    for (let c = 0; c < k; c++) mx = Math.max(mx, Math.abs(v[i * k + c]!));
    s[i] = mx > 0 ? f(mx / 127) : 1;
    const inv = f(1 / s[i]!);
    for (let c = 0; c < k; c++) q[i * k + c] = Math.max(-127, Math.min(127, roundEven(f(v[i * k + c]! * inv))));
  }
  return { q, s };
}

/**
 * llama.cpp through node-llama-cpp (not a dependency: CI installs it beside the tree), for a
 * suite's before() hook: the loaded library, or the suite skipped, saying why.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function llamaCppOrSkip(ctx: Mocha.Context): Promise<any> {
  try {
    const { getLlama } = (await import('node-llama-cpp' as string)) as { getLlama: (o: object) => Promise<unknown> };
    return await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  } catch (e) {
    console.log(`      (skipped: node-llama-cpp is not installed: npm install --no-save node-llama-cpp; ${(e as Error).message.split('\n')[0]})`);
    ctx.skip();
  }
}
