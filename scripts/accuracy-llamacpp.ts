// accuracy-llamacpp.ts - teacher-forced logits of sparq and llama.cpp on the same
// GGUF files, each against a float64 forward over the dequantized weights
// (test/forward64.ts): the mean |deviation| of each position's top-10 logits.
// node-llama-cpp is not a dependency of sparq; install it first:
//   npm install --no-save node-llama-cpp@3
//   node --import tsx scripts/accuracy-llamacpp.ts [q8_0,q4_0,q4_k,q6_k,q4_k_m]
// (llama.cpp runs with its defaults: an f16 KV cache; sparq with its f32 one.)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../lib/index';
import { writeRandomModel, type SynthConfig } from '../lib/model/synth';
import { forward64, top10Deviation } from '../test/forward64';

const types = (process.argv[2] ?? 'q8_0,q4_0,q4_k,q6_k,q4_k_m').split(',');
const cfg: SynthConfig = { dim: 1024, hidden: 2048, layers: 2, heads: 8, kvHeads: 4, vocab: 2000, maxSeq: 128, seed: 31 };
const T = 64;
const ids = Array.from({ length: T }, (_, i) => (i === 0 ? 1 : 3 + ((i * 7919) % (cfg.vocab - 3))));

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const { getLlama } = (await import('node-llama-cpp' as string)) as any;
  const llama = await getLlama({ gpu: false, build: 'never' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-acc-'));
  try {
    for (const t of types) {
      const file = writeRandomModel(path.join(dir, t), cfg, [`gguf-${t}`])[`gguf-${t}`]!;
      const ref = forward64(file, cfg, ids, false);
      const contract = top10Deviation(forward64(file, cfg, ids, true), ref, cfg.vocab);
      const m = await loadModel(file);
      const sp = top10Deviation(await m.forwardAll(ids), ref, cfg.vocab);
      m.dispose();
      const model = await llama.loadModel({ modelPath: file });
      const ctx = await model.createContext({ contextSize: 128, batchSize: 128, threads: 2 });
      const seq = ctx.getSequence();
      const out = await seq.controlledEvaluate(ids.map((id) => [id, { generateNext: { logits: true } }]));
      const lc = new Float32Array(T * cfg.vocab);
      out.forEach((o: { next?: { logits?: Map<number, number> } } | undefined, i: number) => {
        for (const [tok, v] of o?.next?.logits ?? []) lc[i * cfg.vocab + tok] = v;
      });
      const ll = top10Deviation(lc, ref, cfg.vocab);
      await ctx.dispose();
      await model.dispose();
      console.log(JSON.stringify({ type: t, sparq: sp, llamacpp: ll, contract_f64: contract }));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
void main();
