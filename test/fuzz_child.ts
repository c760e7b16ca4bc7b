// fuzz_child.ts - the seeded mutation loop over the model loaders, run in its
// own process by fuzz.test.ts (a crash or a hang there fails the test with the
// case that caused it). Writes a small random model in every format (llama2.c +
// tokenizer.bin, GGUF F32 / Q8_0, Hugging Face safetensors + config.json +
// tokenizer.json, and a sparq file with int8 and sparse weights), then for each
// case mutates one file (truncation, byte flips, extreme header words, JSON
// edits), loads it, and when the load succeeds runs a forward pass and a few
// greedy tokens. Every failure must be an Error with a message.
// Usage: node --import tsx test/fuzz_child.ts SEED CASES DIR
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, pruneModel, quantizeModel, saveModel } from '../lib/index';
import { Rng } from '../lib/tensor';
import { writeRandomModel } from '../lib/model/synth';

interface Target { name: string; file: string; mutate: string; load: (file: string) => Promise<unknown> }

const EXTREME = [0, 1, 0xffffffff, 0x7fffffff, 0x80000000, 0xfffffffe, 65536, 2 ** 31 - 1];

function mutate(buf: Buffer, rng: Rng, textual: boolean): { out: Buffer; how: string } {
  const r = rng.next();
  const pick = (n: number) => Math.floor(rng.next() * n);
  if (r < 0.25) {
    const len = pick(buf.length);
    return { out: buf.subarray(0, len), how: `truncate to ${len}` };
  }
  const out = Buffer.from(buf);
  if (textual && r < 0.6) {
    // JSON: a number becomes huge / negative / fractional, or a string / bracket goes missing
    const s = out.toString('utf8');
    const nums = [...s.matchAll(/-?\d+(\.\d+)?(e-?\d+)?/g)];
    if (nums.length && rng.next() < 0.7) {
      const m = nums[pick(nums.length)]!;
      const v = ['-1', '0', '1e30', '4294967296', '3.5', '-2147483648', '9007199254740993', 'null', '"x"'][pick(9)]!;
      return { out: Buffer.from(s.slice(0, m.index) + v + s.slice(m.index! + m[0].length)), how: `json number at ${m.index} -> ${v}` };
    }
    const at = pick(s.length);
    return { out: Buffer.from(s.slice(0, at) + s.slice(at + 1 + pick(4))), how: `json cut at ${at}` };
  }
  if (r < 0.6 && out.length >= 8) {
    // a header word (first 4 KiB) set to an extreme value
    const at = pick(Math.min(out.length - 4, 4096)) & ~3;
    const v = EXTREME[pick(EXTREME.length)]!;
    out.writeUInt32LE(v >>> 0, at);
    return { out, how: `u32 at ${at} = ${v}` };
  }
  const flips = 1 + pick(8);
  const where: number[] = [];
  for (let i = 0; i < flips && out.length; i++) {
    const at = rng.next() < 0.7 ? pick(Math.min(out.length, 4096)) : pick(out.length);
    out[at] = out[at]! ^ (1 << pick(8));
    where.push(at);
  }
  return { out, how: `flip bytes ${where.join(',')}` };
}

async function exercise(m: Awaited<ReturnType<typeof loadModel>>): Promise<void> {
  try {
    await m.forward([1, 2, 3].map((t) => t % m.config.vocab));
    let n = 0;
    for await (const _ of m.generate([1], { maxTokens: 3, temperature: 0 })) n++;
    void n;
  } finally {
    m.dispose();
  }
}

async function main(): Promise<void> {
  const [seedArg, casesArg, dirArg] = process.argv.slice(2);
  const seed = Number(seedArg ?? 1), cases = Number(casesArg ?? 100), dir = dirArg ?? fs.mkdtempSync('/tmp/sparq-fuzz-');
  const src = path.join(dir, 'src');
  const f = writeRandomModel(src, { dim: 32, hidden: 64, layers: 2, heads: 4, kvHeads: 2, vocab: 400, maxSeq: 64, seed: 7 }, ['llama2c', 'gguf-f32', 'gguf-q8_0', 'hf']);
  // a sparq file with int8 and sparse linears
  const base = await loadModel(f.llama2c!, { tokenizer: f.tokenizer });
  const pruned = await pruneModel(base, { sparsity: 0.5, weights: 'int8' });
  const q = await quantizeModel(base, { weights: { bits: 4, granularity: { groupSize: 32 } } });
  const sparqSparse = path.join(src, 'pruned.sparq'), sparqQ4 = path.join(src, 'int4.sparq');
  await saveModel(pruned, sparqSparse);
  await saveModel(q, sparqQ4);
  for (const m of [base, pruned, q]) m.dispose();

  const work = path.join(dir, 'work');
  fs.mkdirSync(work, { recursive: true });
  const hfDir = f.hf!;
  const copyHf = (): string => {
    const d = path.join(work, 'hf');
    fs.rmSync(d, { recursive: true, force: true });
    fs.cpSync(hfDir, d, { recursive: true });
    return d;
  };
  const targets: Target[] = [
    { name: 'llama2.c checkpoint', file: f.llama2c!, mutate: 'model.bin', load: (p) => loadModel(p, { tokenizer: f.tokenizer }) },
    { name: 'llama2.c tokenizer.bin', file: f.tokenizer!, mutate: 'tokenizer.bin', load: (p) => loadModel(f.llama2c!, { tokenizer: p }) },
    { name: 'GGUF F32', file: f['gguf-f32']!, mutate: 'model.gguf', load: (p) => loadModel(p) },
    { name: 'GGUF Q8_0', file: f['gguf-q8_0']!, mutate: 'model.gguf', load: (p) => loadModel(p, { weights: 'int8' }) },
    { name: 'sparq (sparse int8)', file: sparqSparse, mutate: 'm.sparq', load: (p) => loadModel(p) },
    { name: 'sparq (int4)', file: sparqQ4, mutate: 'm.sparq', load: (p) => loadModel(p) },
  ];
  for (const part of ['model.safetensors', 'config.json', 'tokenizer.json']) {
    targets.push({
      name: `Hugging Face ${part}`, file: path.join(hfDir, part), mutate: part,
      load: async (p) => {
        const d = copyHf();
        fs.copyFileSync(p, path.join(d, part));
        return loadModel(d);
      },
    });
  }
  const rng = new Rng(seed);
  const tally = { cases: 0, loaded: 0, rejected: 0, byTarget: {} as Record<string, { loaded: number; rejected: number }> };
  const messages = new Map<string, number>();
  for (let i = 0; i < cases; i++) {
    const t = targets[i % targets.length]!;
    const buf = fs.readFileSync(t.file);
    const { out, how } = mutate(buf, rng, t.mutate.endsWith('.json'));
    const file = path.join(work, t.mutate);
    fs.writeFileSync(file, out);
    process.stderr.write(`case ${i}: ${t.name}: ${how}\n`);
    const row = (tally.byTarget[t.name] ??= { loaded: 0, rejected: 0 });
    try {
      const m = await t.load(file) as Awaited<ReturnType<typeof loadModel>>;
      await exercise(m);
      tally.loaded++;
      row.loaded++;
    } catch (e) {
      if (!(e instanceof Error) || !e.message) throw new Error(`case ${i} (${t.name}, ${how}): threw a non-Error or an empty message: ${String(e)}`);
      tally.rejected++;
      row.rejected++;
      const key = e.message.replace(/\d+/g, 'N').slice(0, 90);
      messages.set(key, (messages.get(key) ?? 0) + 1);
    }
    tally.cases++;
  }
  const top = [...messages.entries()].sort((a, b) => b[1] - a[1]).slice(0, process.env.FUZZ_ALL ? 1000 : 12).map(([m, n]) => `${n} x ${m}`);
  process.stdout.write(JSON.stringify({ ...tally, topMessages: top }) + '\n');
  if (!dirArg) fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  process.stderr.write(`fuzz child failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(2);
});
