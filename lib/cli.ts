#!/usr/bin/env node
// cli.ts - `npx sparq <command>`:
//   sparq info                       CPU features, chosen kernels, threads, CUDA
//   sparq bench gemm [--quick] [--isa avx2,amx] [--threads N] [--min-time S] [--json FILE]
//   sparq bench attention [--quick] [--threads N] [--min-time S] [--json FILE]
//   sparq bench e2e [--quick] [--threads N] [--json FILE]
//   sparq bench spmm [--quick] [--threads N] [--min-time S] [--json FILE]
//   sparq generate --model PATH [--tokenizer PATH] --prompt TEXT [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--weights int8]
import { info, ISAS, loadModel, setNumThreads, type IsaName } from './index';
import { benchAttention } from './bench/attention';
import { benchE2e, benchE2eChild } from './bench/e2e';
import { benchGemm } from './bench/gemm';
import { benchSpmm } from './bench/spmm';

const USAGE = `usage:
  sparq info
  sparq bench gemm [--quick] [--isa LIST] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq bench attention [--quick] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq bench e2e [--quick] [--threads N] [--json FILE]
  sparq bench spmm [--quick] [--threads N] [--min-time SECONDS] [--json FILE]
  sparq generate --model PATH [--tokenizer PATH] [--prompt TEXT] [-n N] [--temperature T] [--top-k K]
                 [--top-p P] [--seed S] [--weights f32|int8] [--max-seq N]

  --isa       comma-separated int8 paths to run (${ISAS.join(', ')}); default: every path this CPU supports but ref
  --quick     fewer shapes and shorter timing
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

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === 'info') {
    console.log(JSON.stringify(info(), null, 2));
    return 0;
  }
  if (cmd === 'bench' && sub === 'gemm') {
    const isaArg = flag(rest, '--isa');
    const isas = isaArg?.split(',').map((s) => s.trim()) as IsaName[] | undefined;
    for (const i of isas ?? []) if (!ISAS.includes(i)) throw new Error(`unknown ISA '${i}' (expected ${ISAS.join(', ')})`);
    const threads = flag(rest, '--threads');
    const minTime = flag(rest, '--min-time');
    await benchGemm({
      isas, quick: rest.includes('--quick'), json: flag(rest, '--json'),
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
    if (child !== undefined) {
      if (threads) setNumThreads(Number(threads));
      await benchE2eChild(Number(child), flag(rest, '--dir')!, rest.includes('--quick'));
      return 0;
    }
    await benchE2e({ quick: rest.includes('--quick'), json: flag(rest, '--json'), threads: threads ? Number(threads) : undefined });
    return 0;
  }
  if (cmd === 'bench' && sub === 'spmm') {
    const threads = flag(rest, '--threads'), minTime = flag(rest, '--min-time');
    await benchSpmm({ quick: rest.includes('--quick'), json: flag(rest, '--json'), threads: threads ? Number(threads) : undefined,
      minTime: minTime ? Number(minTime) : undefined });
    return 0;
  }
  if (cmd === 'generate') return generate(argv.slice(1));
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
