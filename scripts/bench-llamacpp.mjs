#!/usr/bin/env node
// bench-llamacpp.mjs - the same end-to-end run as `npx sparq bench e2e` on
// llama.cpp, through node-llama-cpp's prebuilt CPU binary, for comparison.
// node-llama-cpp is not a dependency of sparq; install it next to this script:
//   npm install --no-save node-llama-cpp@3
//   node scripts/bench-llamacpp.mjs <tmp>/sparq-bench-model/model-q8_0.gguf [THREADS] [PROMPT] [TOKENS]
// (the GGUFs - Q8_0, Q6_K, Q4_K_M, Q4_0 - are written by `npx sparq bench e2e`).
// Prints one JSON line per run: prompt tokens/s (128 ids) and decode tokens/s
// (64 greedy tokens), with THREADS threads (default 2; on 2-vCPU machines 1 can
// be faster: run both).
import { getLlama } from 'node-llama-cpp';
import { createRequire } from 'node:module';

const { readGguf } = createRequire(import.meta.url)('../dist/model/gguf.js');

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/bench-llamacpp.mjs MODEL.gguf [THREADS] [PROMPT] [TOKENS]');
  process.exit(2);
}
const llama = await getLlama({ gpu: false, build: 'never' });
const model = await llama.loadModel({ modelPath: file });
const threads = Number(process.argv[3] ?? 2), plen = Number(process.argv[4] ?? 128), gen = Number(process.argv[5] ?? 64);
const ctx = await model.createContext({ contextSize: Math.max(1024, plen + gen + 1), threads, batchSize: 512 });
const seq = ctx.getSequence();
const toks = readGguf(file).meta.get('tokenizer.ggml.tokens'), vocab = Array.isArray(toks) ? toks.length : 32000;
// as bench e2e's promptIds
const prompt = Array.from({ length: plen }, (_, i) => (vocab > 518 ? 259 + ((i * 7919) % (vocab - 259)) : (i * 7919) % vocab));
for (let r = 0; r < 5; r++) {
  await seq.clearHistory();
  const t0 = performance.now();
  let n = 0, t1 = 0;
  for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
    void tok;
    if (n === 0) t1 = performance.now();  // first token = end of the prompt pass
    if (++n > gen) break;
  }
  const t2 = performance.now();
  console.log(JSON.stringify({ threads, prompt_tok_s: plen / ((t1 - t0) / 1000), decode_tok_s: gen / ((t2 - t1) / 1000) }));
}
