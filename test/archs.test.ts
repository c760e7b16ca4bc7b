// The architectures beyond Llama 2: Llama 3.1 rope scaling (rope_freqs / rope_scaling
// llama3), Qwen2 (q / k / v biases, half-split RoPE) and Qwen3 (per-head q / k
// RMSNorm, head size independent of dim). Random-weight fixtures with real
// vocabularies in GGUF and Hugging Face form give the same ids, logits and greedy
// tokens; llama.cpp (node-llama-cpp, when installed) gives the same logits on the
// GGUF files; saving, quantizing, pruning and GGUF export keep what these layers add.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { evaluate, loadModel, pruneModel, quantizeModel, saveModel, type Model } from '../lib/index';
import { ropeScalingFactors } from '../lib/model/hf';
import { writeRandomModel, type SynthConfig } from '../lib/model/synth';
import { writeGgufModel } from '../lib/model/gguf_write';
import { readGguf, writeGguf, type GgufWriteTensor, type Typed } from '../lib/model/gguf';
import { llamaCppOrSkip } from './helpers';

const MODULES = path.join(__dirname, '..', 'node_modules');
const LLAMA3 = path.join(MODULES, '@lenml', 'tokenizer-llama3', 'models', 'tokenizer.json');
const QWEN = path.join(MODULES, '@lenml', 'tokenizer-qwen2_5', 'models', 'tokenizer.json');

const small = { dim: 64, hidden: 96, layers: 2, heads: 4, kvHeads: 2, maxSeq: 256 };
const FIXTURES: Record<string, SynthConfig> = {
  // Llama 3.2 style: tied, rope scaling llama3 (theta 500000)
  llama3: { ...small, vocab: 128256, tied: true, ropeScaling: 'llama3', tokenizerJson: LLAMA3, seed: 3 },
  // Qwen 2.5 style: tied, biases
  qwen2: { ...small, arch: 'qwen2', vocab: 151665, tied: true, tokenizerJson: QWEN, seed: 4 },
  // Qwen 3 style: untied, q / k norms, head size 32 with dim 64 and 4 heads
  qwen3: { ...small, arch: 'qwen3', headDim: 32, vocab: 151665, tokenizerJson: QWEN, seed: 5 },
};
const TEXT = 'The quick brown fox, 12345 times: "jumps" over the lazy dog\'s back!\n' + 'Rotary positions matter further out. '.repeat(14);

/** max |a - b| over max |b| */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

/** bit-identical logits (a deep equal over millions of entries is slow) */
const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

async function greedy(m: Model, ids: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  for await (const t of m.generate(ids, { temperature: 0, maxTokens: n })) out.push(t.id);
  return out;
}

describe('architectures: Llama 3.1 rope scaling, Qwen2, Qwen3 (GGUF and Hugging Face)', function () {
  this.timeout(600000);
  let dir: string;
  const files: Record<string, Record<string, string>> = {};
  before(function () {
    if (!fs.existsSync(LLAMA3) || !fs.existsSync(QWEN)) throw new Error('the tokenizer devDependencies are missing: npm ci');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-archs-'));
    for (const [name, cfg] of Object.entries(FIXTURES)) files[name] = writeRandomModel(path.join(dir, name), cfg, ['gguf-f32', 'hf']);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const name of Object.keys(FIXTURES)) {
    it(`${name}: GGUF and Hugging Face load as ${FIXTURES[name]!.arch ?? 'llama'}, tokenize alike, and give the same logits and greedy ids`, async () => {
      const g = await loadModel(files[name]!['gguf-f32']!), h = await loadModel(files[name]!.hf!);
      try {
        const c = FIXTURES[name]!;
        for (const m of [g, h]) {
          expect(m.config.arch).to.equal(c.arch ?? 'llama');
          expect(m.config.headDim).to.equal(c.headDim ?? c.dim / c.heads);
          expect(m.config.tiedEmbeddings).to.equal(!!c.tied);
          expect(m.config.ropeScaling?.type).to.equal(c.ropeScaling);
        }
        const ids = g.tokenizer.encode(TEXT);
        expect(h.tokenizer.encode(TEXT)).to.deep.equal(ids);
        expect(ids.length).to.be.greaterThan(100);
        const lg = await g.forwardAll(ids), lh = await h.forwardAll(ids);
        expect(relDiff(lh, lg)).to.be.lessThan(1e-5);
        expect(await greedy(h, ids.slice(0, 20), 12)).to.deep.equal(await greedy(g, ids.slice(0, 20), 12));
      } finally {
        g.dispose();
        h.dispose();
      }
    });
  }

  it('what each architecture adds changes the logits (biases, q / k norms, rope factors are not ignored)', async () => {
    // the same GGUF with the additions dropped (biases zeroed, norms set to 1, rope_freqs to 1) must differ
    for (const name of Object.keys(FIXTURES)) {
      const src = files[name]!['gguf-f32']!, g = readGguf(src), raw = fs.readFileSync(src);
      const tensors: GgufWriteTensor[] = [...g.tensors.values()].map((t) => {
        let data = new Uint8Array(raw.subarray(t.offset, t.offset + t.bytes));
        if (/\.bias$|_norm\.weight$|^rope_freqs/.test(t.name) && !/attn_norm|ffn_norm|output_norm/.test(t.name)) {
          const f = new Float32Array(t.bytes / 4).fill(/bias/.test(t.name) ? 0 : 1);
          data = new Uint8Array(f.buffer);
        }
        return { name: t.name, dims: t.dims, type: t.type, data };
      });
      const meta: [string, Typed][] = [...g.meta.entries()].map(([k, v]) => [k, typed(v)]);
      const plain = path.join(dir, `${name}-plain.gguf`);
      writeGguf(plain, meta, tensors);
      const a = await loadModel(src), b = await loadModel(plain);
      const ids = a.tokenizer.encode(TEXT);
      const d = relDiff(await b.forwardAll(ids), await a.forwardAll(ids));
      a.dispose();
      b.dispose();
      expect(d, name).to.be.greaterThan(1e-3);
    }
  });

  it('rope scaling llama3: the factors follow the Hugging Face inv_freq rule', () => {
    // transformers' _compute_llama3_parameters, written independently: the factor is inv_freq / inv_freq_llama
    const hd = 64, theta = 500000, factor = 32, low = 1, high = 4, orig = 8192;
    const f = ropeScalingFactors({ type: 'llama3', factor, lowFreqFactor: low, highFreqFactor: high, originalMaxSeq: orig }, hd, theta);
    let seen = new Set<string>();
    for (let i = 0; i < hd / 2; i++) {
      const inv = 1 / Math.pow(theta, (2 * i) / hd), wavelen = (2 * Math.PI) / inv;
      let scaled = wavelen > orig / low ? inv / factor : inv;
      if (!(wavelen < orig / high) && !(wavelen > orig / low)) {
        const smooth = (orig / wavelen - low) / (high - low);
        scaled = (1 - smooth) * scaled / factor + smooth * scaled;
        seen.add('smooth');
      } else seen.add(wavelen < orig / high ? 'high' : 'low');
      expect(f[i]).to.be.closeTo(inv / scaled, 1e-5 * (inv / scaled));
    }
    expect([...seen].sort()).to.deep.equal(['high', 'low', 'smooth']);
    seen = new Set();
    expect(Array.from(ropeScalingFactors({ type: 'linear', factor: 4 }, 8, 10000))).to.deep.equal([4, 4, 4, 4]);
  });

  it('saveModel keeps biases, q / k norms and rope factors: the sparq file gives the same logits', async () => {
    for (const name of Object.keys(FIXTURES)) {
      const m = await loadModel(files[name]!.hf!);
      const out = path.join(dir, `${name}.sparq`);
      await saveModel(m, out);
      const r = await loadModel(out);
      expect(r.config.arch).to.equal(m.config.arch);
      expect(r.config.ropeScaling).to.deep.equal(m.config.ropeScaling);
      const ids = m.tokenizer.encode(TEXT);
      expect(sameBits(await r.forwardAll(ids), await m.forwardAll(ids)), name).to.equal(true);
      r.dispose();
      m.dispose();
    }
  });

  it('quantizeModel (int8 + SmoothQuant, int4), pruneModel (2:4, structured heads) and evaluate() run on Qwen2 / Qwen3; saved and reloaded exactly', async () => {
    for (const name of ['qwen2', 'qwen3']) {
      const f32 = await loadModel(files[name]!['gguf-f32']!);
      const calib = [f32.tokenizer.encode(TEXT).slice(0, 64)];
      const models: [string, Model][] = [
        ['int8 smoothquant', await quantizeModel(f32, { smoothQuant: { alpha: 0.5 }, calibration: calib })],
        ['int4 g32', await quantizeModel(f32, { weights: { bits: 4, granularity: { groupSize: 32 } } })],
        ['2:4', await pruneModel(f32, { pattern: '2:4', calibration: calib })],
        ['heads 0.5', await pruneModel(f32, { structured: { heads: 0.5 }, calibration: calib })],
      ];
      for (const [what, q] of models) {
        const e = await evaluate(q, f32, { tokens: calib, contextLength: 64 });
        console.log(`      ${name} ${what}: top-1 ${e.top1Agreement.toFixed(3)}, KL ${e.meanKLD.toFixed(4)}`);
        expect(e.perplexity, `${name} ${what}`).to.be.finite;
        expect(e.top1Agreement, `${name} ${what}`).to.be.greaterThan(what.startsWith('int8') ? 0.9 : 0);
        const out = path.join(dir, `${name}-q.sparq`);
        await saveModel(q, out);
        const r = await loadModel(out);
        const ids = calib[0]!;
        expect(sameBits(await r.forwardAll(ids), await q.forwardAll(ids)), `${name} ${what}`).to.equal(true);
        r.dispose();
        q.dispose();
      }
      const pr = models[3]![1];
      expect(pr.pruneReport?.heads).to.deep.equal([4, 2]);
      f32.dispose();
    }
  });

  it('GGUF export (npx sparq compress) from the Hugging Face folders: same logits in f32, the layers llama.cpp names', async () => {
    for (const name of Object.keys(FIXTURES)) {
      const h = await loadModel(files[name]!.hf!);
      const out = path.join(dir, `${name}-export.gguf`);
      await writeGgufModel(h, out, 'f32');
      const g = readGguf(out);
      expect(g.meta.get('general.architecture')).to.equal(FIXTURES[name]!.arch ?? 'llama');
      const names = [...g.tensors.keys()];
      if (name === 'qwen2') expect(names).to.include.members(['blk.0.attn_q.bias', 'blk.1.attn_v.bias']);
      if (name === 'qwen3') expect(names).to.include.members(['blk.0.attn_q_norm.weight', 'blk.1.attn_k_norm.weight']);
      if (name === 'llama3') expect(names).to.include('rope_freqs.weight');
      const e = await loadModel(out);
      const ids = h.tokenizer.encode(TEXT);
      expect(relDiff(await e.forwardAll(ids), await h.forwardAll(ids)), name).to.be.lessThan(1e-5);
      e.dispose();
      h.dispose();
    }
  });

  it('refuses what it does not run, naming it', async () => {
    const hf = files.qwen2!.hf!;
    const cfgFile = path.join(hf, 'config.json'), orig = fs.readFileSync(cfgFile, 'utf8');
    const withConfig = async (edit: (c: Record<string, unknown>) => void, re: RegExp) => {
      const c = JSON.parse(orig) as Record<string, unknown>;
      edit(c);
      fs.writeFileSync(cfgFile, JSON.stringify(c));
      try {
        await loadModel(hf).then((m) => { m.dispose(); throw new Error('loaded'); }, (e: Error) => expect(e.message).to.match(re));
      } finally {
        fs.writeFileSync(cfgFile, orig);
      }
    };
    await withConfig((c) => { c.architectures = ['Phi3ForCausalLM']; c.model_type = 'phi3'; }, /architecture 'Phi3ForCausalLM' is not supported \(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM\)/);
    await withConfig((c) => { c.rope_scaling = { rope_type: 'yarn', factor: 4 }; }, /rope_scaling type 'yarn' is not supported/);
    await withConfig((c) => { c.eos_token_id = [151643, 999999]; }, /eos_token_id 999999 is outside the vocabulary/);
    // a list of end ids is taken whole
    const c = JSON.parse(orig) as Record<string, unknown>;
    fs.writeFileSync(cfgFile, JSON.stringify({ ...c, eos_token_id: [151645, 151643], max_position_embeddings: 131072, sliding_window: 131072 }));
    try {
      const m = await loadModel(hf);
      expect(m.stopIds).to.deep.equal([151645, 151643]);
      // a 131072-position model gets 8192 unless asked for more
      expect(m.config.maxSeq).to.equal(8192);
      m.dispose();
      const big = await loadModel(hf, { maxSeq: 10000 });
      expect(big.config.maxSeq).to.equal(10000);
      big.dispose();
    } finally {
      fs.writeFileSync(cfgFile, orig);
    }
    // GGUF: another architecture, a qwen2 layer without its biases
    const src = files.qwen2!['gguf-f32']!, g = readGguf(src), raw = fs.readFileSync(src);
    const rewrite = (file: string, drop: (n: string) => boolean, arch: string) => {
      const tensors = [...g.tensors.values()].filter((t) => !drop(t.name)).map((t) => ({ name: t.name, dims: t.dims, type: t.type, data: new Uint8Array(raw.subarray(t.offset, t.offset + t.bytes)) }));
      const meta: [string, Typed][] = [...g.meta.entries()].map(([k, v]) => [k.replace(/^qwen2\./, `${arch}.`), typed(k === 'general.architecture' ? arch : v)]);
      writeGguf(file, meta, tensors);
      return file;
    };
    for (const [file, re] of [
      [rewrite(path.join(dir, 'phi.gguf'), () => false, 'phi3'), /architecture 'phi3' is not supported \(sparq runs llama, qwen2, qwen3\)/],
      [rewrite(path.join(dir, 'nobias.gguf'), (n) => n === 'blk.1.attn_k.bias', 'qwen2'), /tensor blk\.1\.attn_k\.bias is missing \(qwen2 layers have q \/ k \/ v biases\)/],
      [rewrite(path.join(dir, 'nonorm.gguf'), () => false, 'qwen3'), /tensor blk\.0\.attn_q_norm\.weight is missing \(qwen3 layers have q \/ k norms\)/],
    ] as const) {
      await loadModel(file).then((m) => { m.dispose(); throw new Error(`${file} loaded`); }, (e: Error) => expect(e.message).to.match(re));
    }
  });
});

describe('architectures against llama.cpp (node-llama-cpp)', function () {
  this.timeout(600000);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let llama: any = null;
  let dir: string;
  before(async function () {
    llama = await llamaCppOrSkip(this);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-archs-llamacpp-'));
  });
  after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  for (const name of Object.keys(FIXTURES)) {
    it(`${name}: teacher-forced logits of every position match llama.cpp's on the same GGUF`, async () => {
      const file = writeRandomModel(path.join(dir, name), FIXTURES[name]!, ['gguf-f32'])['gguf-f32']!;
      const m = await loadModel(file);
      const ids = m.tokenizer.encode(TEXT), V = m.config.vocab;
      const ours = await m.forwardAll(ids);
      m.dispose();
      const lm = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
      const ctx = await lm.createContext({ contextSize: 256, batchSize: 256, threads: 2 });
      try {
        const out = await ctx.getSequence().controlledEvaluate(ids.map((id) => [id, { generateNext: { logits: true } }]));
        const theirs = new Float32Array(ids.length * V);
        out.forEach((o: { next?: { logits?: Map<number, number> } } | undefined, i: number) => {
          for (const [tok, v] of o?.next?.logits ?? []) theirs[i * V + tok] = v;
        });
        // llama.cpp keeps its KV cache in f16: agreement to ~1e-3 of the largest logit
        const d = relDiff(ours, theirs);
        console.log(`      ${name}: ${ids.length} positions, max |sparq - llama.cpp| / max |logit| = ${d.toExponential(2)}`);
        expect(d).to.be.lessThan(3e-3);
      } finally {
        await ctx.dispose();
        await lm.dispose();
      }
    });
  }
});

/** a GGUF metadata value as the writer takes it */
function typed(v: unknown): Typed {
  if (typeof v === 'string') return { type: 'str', value: v };
  if (typeof v === 'boolean') return { type: 'bool', value: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { type: 'u32', value: v } : { type: 'f32', value: v };
  if (Array.isArray(v)) return typeof v[0] === 'string' ? { type: 'arr', elem: 'str', value: v as string[] } : { type: 'arr', elem: Number.isInteger(v[0]) ? 'i32' : 'f32', value: v as number[] };
  throw new Error(`typed: ${String(v)}`);
}
