// synth.ts - random-weight Llama / Qwen2 / Qwen3 models for tests and benchmarks,
// written in real formats: llama2.c checkpoint + tokenizer.bin, GGUF v3 with
// F32, F16 or any quantized ggml type sparq writes (Q4_0 .. Q6_K, IQ4_*, the
// Q4_K_M mix; norms and biases stay F32, as llama.cpp writes them), and Hugging
// Face folders. The same seed gives the same weights in every format.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../tensor';
import { GGML_F32, encodeTensor, ggufTypeFor, llamaGgufMeta, writeGguf, type GgufWriteTensor } from './gguf';
import { byteLevelTokenizer } from './hf';
import type { Tokenizer } from './tokenizer';

export interface SynthConfig {
  /** 'qwen2': q / k / v biases; 'qwen3': per-head q / k norms (default 'llama') */
  arch?: 'llama' | 'qwen2' | 'qwen3';
  /** features per head (default dim / heads; Qwen3 sets its own) */
  headDim?: number;
  /** Llama 3.1 rope scaling (factor 32, low / high frequency factors 1 / 4, original context 8192): GGUF rope_freqs, HF rope_scaling */
  ropeScaling?: 'llama3';
  /** RoPE base (default 10000; 500000 with ropeScaling) */
  ropeTheta?: number;
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  maxSeq: number;
  /** classifier shares the token embedding (default false) */
  tied?: boolean;
  seed?: number;
  /**
   * a byte-level BPE tokenizer.json (Llama 3, Qwen...; tokenizer_config.json beside it is read
   * too): the model uses its vocabulary (vocab must be its size) in GGUF ('gpt2' metadata)
   * and Hugging Face form, instead of a synthetic SentencePiece one
   */
  tokenizerJson?: string;
}

interface ByteVocab { tok: Tokenizer; json: string; config: string | null }

// A byte-level vocabulary from a tokenizer.json, BOS / EOS named by its tokenizer_config.json.
function byteVocab(c: SynthConfig): ByteVocab | null {
  if (!c.tokenizerJson) return null;
  const file = c.tokenizerJson;
  const json = fs.readFileSync(file, 'utf8');
  const cfgFile = path.join(path.dirname(file), 'tokenizer_config.json');
  const config = fs.existsSync(cfgFile) ? fs.readFileSync(cfgFile, 'utf8') : null;
  const t = JSON.parse(json) as { added_tokens?: { id: number; content: string }[] };
  const cf = (config ? JSON.parse(config) : {}) as { bos_token?: unknown; eos_token?: unknown };
  const named = (v: unknown, d: number) => {
    const text = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as { content?: string }).content : undefined;
    return t.added_tokens?.find((a) => a.content === text)?.id ?? d;
  };
  const eos = named(cf.eos_token, 0), bos = named(cf.bos_token, eos);
  return { tok: byteLevelTokenizer(t, file, c.vocab, bos, eos, cf as Record<string, unknown>), json, config };
}

/** gguf-TYPE: every linear (and the embedding) in that ggml type (q4_0, q4_k, iq4_xs, ...); gguf-q4_k_m: llama.cpp's
 *  Q4_K_M mix (Q6_K for the classifier, attn_v and ffn_down, Q4_K elsewhere); rows whose length is not a
 *  multiple of the type's block fall back to Q8_0 (or F32) as llama.cpp's quantizer does. */
export type SynthFormat = 'llama2c' | 'gguf-f32' | 'gguf-f16' | 'gguf-q8_0' | `gguf-${string}` | 'hf' | 'hf-bf16';

interface Weights {
  embed: Float32Array;
  layers: { attnNorm: Float32Array; wq: Float32Array; wk: Float32Array; wv: Float32Array; wo: Float32Array; ffnNorm: Float32Array; w1: Float32Array; w2: Float32Array; w3: Float32Array;
    bq?: Float32Array; bk?: Float32Array; bv?: Float32Array; qNorm?: Float32Array; kNorm?: Float32Array }[];
  finalNorm: Float32Array;
  output: Float32Array | null;
}

function randomWeights(c: SynthConfig): Weights {
  const rng = new Rng(c.seed ?? 1);
  const normal = (n: number, std: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = std * rng.normal();
    return a;
  };
  const norm = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = 1 + 0.1 * rng.normal();
    return a;
  };
  const hd = headDimOf(c), kvd = c.kvHeads * hd, qd = c.heads * hd;
  const lin = (n: number, k: number) => normal(n * k, 1 / Math.sqrt(k));
  return {
    embed: normal(c.vocab * c.dim, 1),
    layers: Array.from({ length: c.layers }, () => ({
      attnNorm: norm(c.dim), wq: lin(qd, c.dim), wk: lin(kvd, c.dim), wv: lin(kvd, c.dim), wo: lin(c.dim, qd),
      ffnNorm: norm(c.dim), w1: lin(c.hidden, c.dim), w2: lin(c.dim, c.hidden), w3: lin(c.hidden, c.dim),
      ...(c.arch === 'qwen2' ? { bq: normal(qd, 0.5), bk: normal(kvd, 0.5), bv: normal(kvd, 0.5) } : {}),
      ...(c.arch === 'qwen3' ? { qNorm: norm(hd), kNorm: norm(hd) } : {}),
    })),
    finalNorm: norm(c.dim),
    output: c.tied ? null : lin(c.vocab, c.dim),
  };
}

const headDimOf = (c: SynthConfig) => c.headDim ?? c.dim / c.heads;
const ropeThetaOf = (c: SynthConfig) => c.ropeTheta ?? (c.ropeScaling ? 500000 : 10000);
/** Llama 3.1's rope_scaling as config.json has it */
const LLAMA3_SCALING = { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
/** Llama's HF layout has q / k rows half-split (rotate_half); GGUF's interleaved. Qwen's are half-split in both. */
const permuted = (c: SynthConfig) => (c.arch ?? 'llama') === 'llama';

/** A small SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, printable ASCII, then merged pieces. */
export function synthVocab(size: number, seed = 1): { pieces: string[]; scores: number[] } {
  if (size < 259 + 95) throw new RangeError(`synthVocab: size must be at least ${259 + 95}`);
  const pieces = ['<unk>', '<s>', '</s>'];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const base: string[] = [];
  for (let ch = 32; ch < 127; ch++) base.push(String.fromCharCode(ch));
  pieces.push(...base);
  const seen = new Set(pieces);
  const rng = new Rng(seed);
  const words = ['the', 'and', 'was', 'she', 'he', 'little', 'time', 'once', 'upon', 'day', 'play', 'big', 'said', 'happy', 'friend'];
  while (pieces.length < size) {
    let p: string;
    const r = rng.next();
    if (r < 0.3) p = ' ' + words[Math.floor(rng.next() * words.length)]!;
    else {
      const len = 2 + Math.floor(rng.next() * 5);
      p = (rng.next() < 0.5 ? ' ' : '') + Array.from({ length: len }, () => String.fromCharCode(97 + Math.floor(rng.next() * 26))).join('');
    }
    if (!seen.has(p)) {
      seen.add(p);
      pieces.push(p);
    }
  }
  // merged pieces score by length (longer first), byte / control tokens lowest
  const scores = pieces.map((p, i) => (i < 259 ? -1e6 : p.length - i * 1e-6));
  return { pieces, scores };
}

const bf16 = (a: Float32Array): Uint8Array => {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length), o = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) o[i] = (u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16;  // round to nearest even
  return new Uint8Array(o.buffer);
};

/** HF Llama layout: q / k rows of each head reordered for rotate_half RoPE (pairs (i, i + hd/2)). */
function toHalfSplit(w: Float32Array, heads: number, hd: number, k: number): Float32Array {
  const o = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < hd / 2; i++) {
      o.set(w.subarray((h * hd + 2 * i) * k, (h * hd + 2 * i + 1) * k), (h * hd + i) * k);
      o.set(w.subarray((h * hd + 2 * i + 1) * k, (h * hd + 2 * i + 2) * k), (h * hd + hd / 2 + i) * k);
    }
  return o;
}

function writeHf(dir: string, c: SynthConfig, w: Weights, vocab: { pieces: string[]; scores: number[] }, half: boolean, bv: ByteVocab | null): string {
  fs.mkdirSync(dir, { recursive: true });
  const hd = headDimOf(c), kvd = c.kvHeads * hd, qd = c.heads * hd;
  const split = (a: Float32Array, heads: number, k: number) => (permuted(c) ? toHalfSplit(a, heads, hd, k) : a);
  const tensors: [string, Float32Array, number[]][] = [['model.embed_tokens.weight', w.embed, [c.vocab, c.dim]]];
  w.layers.forEach((l, i) => {
    const p = `model.layers.${i}.`;
    tensors.push(
      [p + 'input_layernorm.weight', l.attnNorm, [c.dim]], [p + 'post_attention_layernorm.weight', l.ffnNorm, [c.dim]],
      [p + 'self_attn.q_proj.weight', split(l.wq, c.heads, c.dim), [qd, c.dim]],
      [p + 'self_attn.k_proj.weight', split(l.wk, c.kvHeads, c.dim), [kvd, c.dim]],
      [p + 'self_attn.v_proj.weight', l.wv, [kvd, c.dim]], [p + 'self_attn.o_proj.weight', l.wo, [c.dim, qd]],
      [p + 'mlp.gate_proj.weight', l.w1, [c.hidden, c.dim]], [p + 'mlp.down_proj.weight', l.w2, [c.dim, c.hidden]],
      [p + 'mlp.up_proj.weight', l.w3, [c.hidden, c.dim]],
    );
    if (l.bq) tensors.push([p + 'self_attn.q_proj.bias', l.bq, [qd]], [p + 'self_attn.k_proj.bias', l.bk!, [kvd]], [p + 'self_attn.v_proj.bias', l.bv!, [kvd]]);
    if (l.qNorm) tensors.push([p + 'self_attn.q_norm.weight', l.qNorm, [hd]], [p + 'self_attn.k_norm.weight', l.kNorm!, [hd]]);
  });
  tensors.push(['model.norm.weight', w.finalNorm, [c.dim]]);
  if (w.output) tensors.push(['lm_head.weight', w.output, [c.vocab, c.dim]]);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const blobs: Uint8Array[] = [];
  let off = 0;
  for (const [name, a, shape] of tensors) {
    const data = half ? bf16(a) : new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    header[name] = { dtype: half ? 'BF16' : 'F32', shape, data_offsets: [off, off + data.length] };
    blobs.push(data);
    off += data.length;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([len, json, ...blobs]));
  const arch = c.arch ?? 'llama';
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    architectures: [{ llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' }[arch]], model_type: arch,
    hidden_size: c.dim, intermediate_size: c.hidden, num_hidden_layers: c.layers,
    num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, vocab_size: c.vocab, max_position_embeddings: c.maxSeq,
    ...(arch === 'qwen3' || hd * c.heads !== c.dim ? { head_dim: hd } : {}), ...(arch === 'qwen3' ? { attention_bias: false } : {}),
    ...(arch !== 'llama' ? { use_sliding_window: false, sliding_window: c.maxSeq } : {}),
    rms_norm_eps: 1e-5, rope_theta: ropeThetaOf(c), rope_scaling: c.ropeScaling ? LLAMA3_SCALING : null,
    tie_word_embeddings: !!c.tied, bos_token_id: bv ? bv.tok.bos : 1, eos_token_id: bv ? bv.tok.eos : 2,
  }, null, 2));
  if (bv) {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), bv.json);
    if (bv.config !== null) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), bv.config);
    return dir;
  }
  // BPE merges from the piece scores: every split of a piece into two pieces, best piece first
  const sp = vocab.pieces.map((p) => p.replace(/ /g, '\u2581'));
  const ids = new Map(sp.map((p, i) => [p, i]));
  const order = sp.map((_, i) => i).filter((i) => i >= 259 && sp[i]!.length > 1).sort((a, b) => vocab.scores[b]! - vocab.scores[a]! || a - b);
  const merges: string[] = [];
  for (const i of order) {
    const p = sp[i]!;
    for (let s = 1; s < p.length; s++) if (ids.has(p.slice(0, s)) && ids.has(p.slice(s))) merges.push(`${p.slice(0, s)} ${p.slice(s)}`);
  }
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0',
    added_tokens: [{ id: 0, content: '<unk>', special: true }, { id: 1, content: '<s>', special: true }, { id: 2, content: '</s>', special: true }],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    model: { type: 'BPE', byte_fallback: true, unk_token: '<unk>', vocab: Object.fromEntries(sp.map((p, i) => [p, i])), merges },
  }));
  return dir;
}

/** Writes the model in each format requested into `dir`; returns the paths (and tokenizer.bin for llama2c). */
export function writeRandomModel(dir: string, c: SynthConfig, formats: SynthFormat[]): Record<string, string> {
  if ((c.headDim === undefined && c.dim % c.heads) || c.heads % c.kvHeads) throw new RangeError('writeRandomModel: heads must divide dim (or headDim be given), kvHeads must divide heads');
  if ((c.arch ?? 'llama') !== 'llama' && formats.includes('llama2c')) throw new RangeError(`writeRandomModel: llama2c checkpoints hold llama models only, not ${c.arch}`);
  if (c.headDim !== undefined && c.headDim * c.heads !== c.dim && formats.includes('llama2c')) throw new RangeError('writeRandomModel: llama2c checkpoints need headDim = dim / heads');
  fs.mkdirSync(dir, { recursive: true });
  const w = randomWeights(c);
  const bv = byteVocab(c);
  if (bv && formats.includes('llama2c')) throw new RangeError('writeRandomModel: llama2c checkpoints take SentencePiece vocabularies only');
  const vocab = bv ? { pieces: [], scores: [] } : synthVocab(c.vocab, c.seed);
  const out: Record<string, string> = {};
  const hd = headDimOf(c), qd = c.heads * hd;
  if (formats.includes('llama2c')) {
    const file = path.join(dir, 'model.bin');
    const fd = fs.openSync(file, 'w');
    const put = (a: Float32Array) => fs.writeSync(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    try {
      const head = new Int32Array([c.dim, c.hidden, c.layers, c.heads, c.kvHeads, c.tied ? c.vocab : -c.vocab, c.maxSeq]);
      fs.writeSync(fd, new Uint8Array(head.buffer));
      put(w.embed);
      for (const key of ['attnNorm', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'w1', 'w2', 'w3'] as const) for (const l of w.layers) put(l[key]);
      put(w.finalNorm);
      put(new Float32Array(c.maxSeq * hd));  // freq_cis_real + freq_cis_imag (unused)
      if (w.output) put(w.output);
    } finally {
      fs.closeSync(fd);
    }
    out.llama2c = file;
    const tok = path.join(dir, 'tokenizer.bin');
    const enc = new TextEncoder();
    const bytes = vocab.pieces.map((p) => enc.encode(p));
    const buf = Buffer.alloc(4 + bytes.reduce((s, b) => s + 8 + b.length, 0));
    buf.writeInt32LE(Math.max(...bytes.map((b) => b.length)), 0);
    let p = 4;
    bytes.forEach((b, i) => {
      buf.writeFloatLE(vocab.scores[i]!, p);
      buf.writeInt32LE(b.length, p + 4);
      buf.set(b, p + 8);
      p += 8 + b.length;
    });
    fs.writeFileSync(tok, buf);
    out.tokenizer = tok;
  }
  for (const f of formats) {
    if (!f.startsWith('gguf')) continue;
    const spec = f.slice(5);
    const tensors: GgufWriteTensor[] = [];
    const add = (name: string, a: Float32Array, n: number, k: number, linear: boolean) => {
      const type = linear ? ggufTypeFor(spec, name, k, { layers: c.layers, tied: !!c.tied }) : GGML_F32;
      tensors.push({ name, dims: n === 1 ? [k] : [k, n], type, data: encodeTensor(a, type, n, k) });
    };
    const kvd = c.kvHeads * hd;
    add('token_embd.weight', w.embed, c.vocab, c.dim, true);
    w.layers.forEach((l, i) => {
      const b = `blk.${i}.`;
      add(b + 'attn_norm.weight', l.attnNorm, 1, c.dim, false);
      add(b + 'attn_q.weight', l.wq, qd, c.dim, true);
      add(b + 'attn_k.weight', l.wk, kvd, c.dim, true);
      add(b + 'attn_v.weight', l.wv, kvd, c.dim, true);
      if (l.bq) {
        add(b + 'attn_q.bias', l.bq, 1, qd, false);
        add(b + 'attn_k.bias', l.bk!, 1, kvd, false);
        add(b + 'attn_v.bias', l.bv!, 1, kvd, false);
      }
      if (l.qNorm) {
        add(b + 'attn_q_norm.weight', l.qNorm, 1, hd, false);
        add(b + 'attn_k_norm.weight', l.kNorm!, 1, hd, false);
      }
      add(b + 'attn_output.weight', l.wo, c.dim, qd, true);
      add(b + 'ffn_norm.weight', l.ffnNorm, 1, c.dim, false);
      add(b + 'ffn_gate.weight', l.w1, c.hidden, c.dim, true);
      add(b + 'ffn_down.weight', l.w2, c.dim, c.hidden, true);
      add(b + 'ffn_up.weight', l.w3, c.hidden, c.dim, true);
    });
    add('output_norm.weight', w.finalNorm, 1, c.dim, false);
    if (w.output) add('output.weight', w.output, c.vocab, c.dim, true);
    if (c.ropeScaling) {
      // the factors as llama.cpp's converter computes them from LLAMA3_SCALING (written out here, apart from the loader's)
      const s = LLAMA3_SCALING, f = new Float32Array(hd >> 1), theta = ropeThetaOf(c);
      for (let i = 0; i < f.length; i++) {
        const wave = (2 * Math.PI) * Math.pow(theta, (2 * i) / hd), lo = s.original_max_position_embeddings / s.low_freq_factor, hi = s.original_max_position_embeddings / s.high_freq_factor;
        const smooth = (s.original_max_position_embeddings / wave - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f[i] = wave < hi ? 1 : wave > lo ? s.factor : 1 / ((1 - smooth) / s.factor + smooth);
      }
      add('rope_freqs.weight', f, 1, f.length, false);
    }
    const file = path.join(dir, `model-${f.slice(5)}.gguf`);
    const shape = {
      arch: c.arch ?? 'llama', name: `sparq random ${c.arch ?? 'llama'}`, dim: c.dim, hidden: c.hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, maxSeq: c.maxSeq,
      headDim: hd, ropeTheta: ropeThetaOf(c), normEps: 1e-5,
    };
    if (bv) {
      const spec = bv.tok.toSpec(), ids = Array.from({ length: c.vocab }, (_, i) => i);
      writeGguf(file, llamaGgufMeta({
        ...shape, tokens: ids.map((i) => bv.tok.spelled(i)), scores: [], tokenTypes: ids.map((i) => (bv.tok.isUserDefined(i) ? 4 : bv.tok.isSpecial(i) ? 3 : 1)),
        bos: spec.bos, eos: spec.eos, addSpacePrefix: false, bpe: { merges: spec.merges ?? [], pre: spec.pre ?? 'gpt2', addBos: spec.addBos !== false },
        chatTemplate: bv.tok.chatTemplate,
      }), tensors);
    } else {
      writeGguf(file, llamaGgufMeta({
        ...shape, tokens: vocab.pieces.map((p) => p.replace(/ /g, '\u2581')), scores: vocab.scores,
        tokenTypes: vocab.pieces.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1)), bos: 1, eos: 2, addSpacePrefix: true,
      }), tensors);
    }
    out[f] = file;
  }
  for (const f of formats) if (f.startsWith('hf')) out[f] = writeHf(path.join(dir, f), c, w, vocab, f === 'hf-bf16', bv);
  return out;
}
