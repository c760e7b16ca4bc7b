#!/usr/bin/env node
// make-model.js - writes a random-weight Llama / Qwen2 / Qwen3 model for tests and benchmarks
// in real formats (llama2.c + tokenizer.bin, GGUF F32 / F16 / Q8_0, Hugging
// Face F32 / BF16). Needs the compiled package (npm run build:ts).
//   node scripts/make-model.js --out DIR [--dim 768] [--hidden 2048] [--layers 12] [--heads 12]
//        [--kv-heads 12] [--vocab 32000] [--max-seq 1024] [--tied] [--seed 1]
//        [--tokenizer-json PATH (a byte-level vocabulary: Llama 3, Qwen; --vocab its size)]
//        [--arch llama|qwen2|qwen3] [--head-dim N] [--rope-scaling llama3] [--rope-theta X]
//        [--formats llama2c,gguf-f32,gguf-f16,gguf-q8_0,hf,hf-bf16]
'use strict';
const path = require('node:path');
const { writeRandomModel } = require(path.join(__dirname, '..', 'dist', 'model', 'synth.js'));

const args = process.argv.slice(2);
const get = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const int = (name, dflt) => {
  const v = Number(get(name, dflt));
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
};
try {
  const out = get('--out');
  if (!out) throw new Error('--out DIR is required');
  const heads = int('--heads', 12);
  const config = {
    dim: int('--dim', 768), hidden: int('--hidden', 2048), layers: int('--layers', 12), heads, kvHeads: int('--kv-heads', heads),
    vocab: int('--vocab', 32000), maxSeq: int('--max-seq', 1024), tied: args.includes('--tied'), seed: int('--seed', 1),
    tokenizerJson: get('--tokenizer-json', undefined),
    arch: get('--arch', 'llama'), headDim: args.includes('--head-dim') ? int('--head-dim') : undefined,
    ropeScaling: get('--rope-scaling', undefined), ropeTheta: args.includes('--rope-theta') ? Number(get('--rope-theta')) : undefined,
  };
  if (!['llama', 'qwen2', 'qwen3'].includes(config.arch)) throw new Error('--arch must be llama, qwen2 or qwen3');
  if (config.ropeScaling !== undefined && config.ropeScaling !== 'llama3') throw new Error('--rope-scaling must be llama3');
  const formats = get('--formats', 'llama2c,gguf-f32,gguf-q8_0').split(',');
  const files = writeRandomModel(out, config, formats);
  for (const [k, v] of Object.entries(files)) console.log(`${k}: ${v}`);
} catch (e) {
  console.error(`make-model: ${e.message}`);
  process.exit(1);
}
