// hf.ts - Hugging Face model folders: config.json (Llama, Mistral, Qwen2, Qwen3),
// *.safetensors shards (F32 / F16 / BF16), tokenizer.json (SentencePiece-style
// BPE with byte fallback, as Llama 1/2 and their fine-tunes ship it).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readBoundedFile, regularFileSize } from './files';
import { preTokenizerName } from './bpe';
import { Tokenizer, packTextPieces } from './tokenizer';

export interface SafetensorsEntry {
  file: string;
  dtype: string;
  shape: number[];
  /** absolute byte offset in `file` */
  offset: number;
  bytes: number;
}

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I8: 1, U8: 1, U16: 2, I32: 4, U32: 4, I64: 8, F64: 8 };

/** The tensor table and metadata of one safetensors file (offsets checked against the file). */
export function readSafetensorsFile(file: string): { tensors: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  const size = regularFileSize(file, 'loadModel');
  const bad = (why: string): never => { throw new RangeError(`loadModel: ${file} is not a valid safetensors file: ${why}`); };
  if (size < 8) bad('too short');
  const out = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  const fd = fs.openSync(file, 'r');
  try {
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (len < 2 || len > 100 * 2 ** 20 || 8 + len > size) bad(`header length ${len}`);
    const head = Buffer.alloc(len);
    fs.readSync(fd, head, 0, len, 8);
    let json: Record<string, { dtype?: string; shape?: number[]; data_offsets?: [number, number] }>;
    try {
      json = JSON.parse(head.toString('utf8')) as typeof json;
    } catch {
      return bad('the header is not JSON');
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) return bad('the header is not a JSON object');
    for (const [k, v] of Object.entries(json)) {
      if (k === '__metadata__') {
        if (typeof v !== 'object' || v === null || Object.values(v).some((x) => typeof x !== 'string')) bad('__metadata__ must map strings to strings');
        metadata = v as unknown as Record<string, string>;
        continue;
      }
      const es = DTYPE_BYTES[v?.dtype ?? ''];
      if (!es || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets) || v.shape.some((d) => !Number.isInteger(d) || d < 0)) bad(`tensor ${k} has a bad entry`);
      const [b, e] = v.data_offsets!;
      const count = v.shape!.reduce((a, x) => a * x, 1);
      if (!(Number.isInteger(b) && Number.isInteger(e) && b >= 0 && e >= b && e - b === count * es! && 8 + len + e <= size)) bad(`tensor ${k}: offsets [${b}, ${e}] do not match its shape or the file (truncated?)`);
      out.set(k, { file, dtype: v.dtype!, shape: v.shape!, offset: 8 + len + b, bytes: e - b });
    }
  } finally {
    fs.closeSync(fd);
  }
  return { tensors: out, metadata };
}

/** The tensor table of every *.safetensors file in a folder. */
export function readSafetensors(dir: string): Map<string, SafetensorsEntry> {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (!files.length) throw new Error(`loadModel: ${dir} has no *.safetensors files`);
  const out = new Map<string, SafetensorsEntry>();
  for (const name of files) for (const [k, v] of readSafetensorsFile(path.join(dir, name)).tensors) out.set(k, v);
  return out;
}

export interface HfConfig {
  arch: 'llama' | 'qwen2' | 'qwen3';
  dim: number; hidden: number; layers: number; heads: number; kvHeads: number; headDim: number; vocab: number; maxSeq: number;
  normEps: number; ropeTheta: number; tied: boolean; bos: number; eos: number;
  /** every end-of-sequence id (config.json and generation_config.json may list several: Llama 3 Instruct's eot) */
  stopIds: number[];
  ropeScaling?: { type: 'llama3' | 'linear'; factor: number };
  /** per-frequency RoPE divisors [headDim / 2] for ropeScaling */
  ropeFreqs?: Float32Array;
}

/** config.json architectures (and model_type) sparq runs, by the decoder family they use */
const HF_ARCHS: Record<string, 'llama' | 'qwen2' | 'qwen3'> = {
  LlamaForCausalLM: 'llama', MistralForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2', Qwen3ForCausalLM: 'qwen3',
};
const HF_MODEL_TYPES: Record<string, 'llama' | 'qwen2' | 'qwen3'> = { llama: 'llama', mistral: 'llama', qwen2: 'qwen2', qwen3: 'qwen3' };

/**
 * RoPE frequency divisors [hd / 2] of Llama 3.1's 'llama3' rope scaling: frequencies whose
 * wavelength exceeds original_max / low_freq_factor are divided by `factor`, those under
 * original_max / high_freq_factor kept, and the band between interpolated smoothly (the
 * factors convert_hf_to_gguf.py writes as rope_freqs.weight). 'linear': every one `factor`.
 */
export function ropeScalingFactors(s: { type: 'llama3' | 'linear'; factor: number; lowFreqFactor?: number; highFreqFactor?: number; originalMaxSeq?: number },
                                   hd: number, theta: number): Float32Array {
  const out = new Float32Array(hd >> 1);
  if (s.type === 'linear') return out.fill(s.factor);
  const low = s.lowFreqFactor ?? 1, high = s.highFreqFactor ?? 4, orig = s.originalMaxSeq ?? 8192;
  const lowWave = orig / low, highWave = orig / high;
  for (let i = 0; i < out.length; i++) {
    const wave = 2 * Math.PI * Math.pow(theta, (2 * i) / hd);  // 2 pi / frequency
    if (wave < highWave) out[i] = 1;
    else if (wave > lowWave) out[i] = s.factor;
    else {
      const smooth = (orig / wave - low) / (high - low);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/** JSON of a file, or an Error naming the file and where the text stops parsing. */
function readJson(file: string): unknown {
  const text = readBoundedFile(file, 'loadModel', 'JSON file').toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`loadModel: ${file} is not valid JSON (${(e as Error).message})`);
  }
}

// Dimensions past these are refused before anything is allocated.
const MAX_DIM = 2 ** 24;

export function readHfConfig(dir: string): HfConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new Error(`loadModel: ${dir} has no config.json`);
  const c = readJson(file) as Record<string, unknown>;
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new TypeError(`loadModel: ${file}: expected a JSON object`);
  const name = (c.architectures as string[] | undefined)?.[0] ?? c.model_type;
  const arch = typeof name === 'string' && Array.isArray(c.architectures) ? HF_ARCHS[name] : HF_MODEL_TYPES[String(c.model_type)];
  if (!arch) throw new RangeError(`loadModel: ${file}: architecture '${String(name)}' is not supported (${Object.keys(HF_ARCHS).join(', ')})`);
  const bad = (why: string): never => { throw new RangeError(`loadModel: ${file}: ${why}`); };
  const int = (k: string, d?: number): number => {
    const v = c[k] ?? d;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_DIM) bad(`${k} must be an integer in [0, 2^24]; got ${String(v)}`);
    return v as number;
  };
  const num = (k: string, d: number): number => {
    const v = c[k] ?? d;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(`${k} must be a number > 0; got ${String(v)}`);
    return v as number;
  };
  const heads = int('num_attention_heads'), dim = int('hidden_size');
  if (heads < 1) bad('num_attention_heads must be at least 1');
  const headDim = c.head_dim === undefined || c.head_dim === null ? dim / heads : int('head_dim');
  if (!Number.isInteger(headDim) || headDim < 1) bad(`hidden_size (${dim}) is not a multiple of num_attention_heads (${heads}) and no head_dim is given`);
  const ropeTheta = num('rope_theta', 10000);
  // end-of-sequence ids: config.json's, then generation_config.json's (a number or a list each)
  const ids = (v: unknown, what: string): number[] => {
    const a = v === undefined || v === null ? [] : Array.isArray(v) ? v : [v];
    for (const x of a) if (!Number.isInteger(x) || (x as number) < 0) bad(`${what} must be a token id or a list of them; got ${JSON.stringify(v)}`);
    return a as number[];
  };
  const stopIds = ids(c.eos_token_id, 'eos_token_id');
  const genFile = path.join(dir, 'generation_config.json');
  if (fs.existsSync(genFile)) {
    const g = readJson(genFile) as Record<string, unknown> | null;
    if (g && typeof g === 'object') for (const id of ids(g.eos_token_id, 'generation_config.json eos_token_id')) if (!stopIds.includes(id)) stopIds.push(id);
  }
  if (!stopIds.length) stopIds.push(2);
  // rope_scaling: none / 'default', Llama 3.1's 'llama3', or 'linear'; anything else is refused
  let ropeScaling: HfConfig['ropeScaling'], ropeFreqs: Float32Array | undefined;
  const rs = c.rope_scaling as Record<string, unknown> | null | undefined;
  if (rs !== undefined && rs !== null) {
    const type = String(rs.rope_type ?? rs.type ?? 'default');
    if (type === 'llama3' || type === 'linear') {
      const factor = Number(rs.factor);
      if (!(factor > 0) || !Number.isFinite(factor)) bad(`rope_scaling.factor must be a number > 0; got ${String(rs.factor)}`);
      const f = (k: string) => (rs[k] === undefined ? undefined : Number(rs[k]));
      const s = { type: type as 'llama3' | 'linear', factor, lowFreqFactor: f('low_freq_factor'), highFreqFactor: f('high_freq_factor'), originalMaxSeq: f('original_max_position_embeddings') };
      if ([s.lowFreqFactor, s.highFreqFactor, s.originalMaxSeq].some((x) => x !== undefined && !(x > 0 && Number.isFinite(x)))) bad('rope_scaling: its factors must be numbers > 0');
      if (type === 'llama3' && (s.highFreqFactor ?? 4) <= (s.lowFreqFactor ?? 1)) bad('rope_scaling: high_freq_factor must exceed low_freq_factor');
      ropeScaling = { type: s.type, factor };
      ropeFreqs = ropeScalingFactors(s, headDim, ropeTheta);
    } else if (type !== 'default') {
      bad(`rope_scaling type '${type}' is not supported (llama3, linear)`);
    }
  }
  // a sliding window shorter than the context (Mistral 7B v0.1): sparq attends to the whole
  // context, so the default context stops at the window, where both agree
  let maxSeq = int('max_position_embeddings');
  const win = c.sliding_window;
  if (typeof win === 'number' && win > 0 && win < maxSeq && c.use_sliding_window !== false) maxSeq = win;
  return {
    arch, dim, hidden: int('intermediate_size'), layers: int('num_hidden_layers'), heads, kvHeads: int('num_key_value_heads', heads), headDim,
    vocab: int('vocab_size'), maxSeq, normEps: num('rms_norm_eps', 1e-6), ropeTheta,
    tied: c.tie_word_embeddings === true, bos: int('bos_token_id', 1), eos: stopIds[0]!, stopIds,
    ...(ropeScaling ? { ropeScaling, ropeFreqs } : {}),
  };
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[]; byte_fallback?: boolean; ignore_merges?: boolean };
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  post_processor?: unknown;
  added_tokens?: { id: number; content: string; special?: boolean }[];
}

// tokenizer_config.json's chat_template: a string, or named templates (the 'default' one)
function chatTemplateOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const d = v.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
    if (typeof d?.template === 'string') return d.template;
  }
  return undefined;
}

interface PreTok { type?: string; pretokenizers?: PreTok[]; pattern?: { Regex?: string; String?: string }; use_regex?: boolean; behavior?: string; invert?: boolean; individual_digits?: boolean }

// The pre-tokenizer of a byte-level tokenizer.json: one Split by regex (Isolated)
// followed by ByteLevel without its own regex, or ByteLevel with GPT-2's regex.
function byteLevelPre(p: PreTok | null | undefined, file: string): string {
  const list = p?.type === 'Sequence' ? p.pretokenizers ?? [] : p ? [p] : [];
  const bl = list.find((x) => x.type === 'ByteLevel');
  // SmolLM: every digit isolated, then ByteLevel with its own (GPT-2) regex
  if (list.length === 2 && list[0]!.type === 'Digits' && list[0]!.individual_digits === true && bl && bl.use_regex !== false) return 'smollm';
  const splits = list.filter((x) => x.type === 'Split');
  if (!bl || list.length !== splits.length + 1 || splits.length > 1) {
    throw new RangeError(`loadModel: ${file}: pre-tokenizer ${JSON.stringify(p)?.slice(0, 200)} is not supported (byte-level: a Split regex and ByteLevel, or ByteLevel alone)`);
  }
  if (splits.length === 0) return 'gpt2';
  const sp = splits[0]!;
  if (bl.use_regex !== false || !sp.pattern?.Regex || (sp.behavior ?? 'Isolated') !== 'Isolated' || sp.invert === true) {
    throw new RangeError(`loadModel: ${file}: pre-tokenizer Split ${JSON.stringify(sp).slice(0, 200)} is not supported (an Isolated regex before ByteLevel without its regex)`);
  }
  return preTokenizerName(sp.pattern.Regex);
}

/**
 * A byte-level BPE tokenizer.json (Llama 3, Qwen, SmolLM...), padded to the model's vocabulary.
 * BOS is prepended when tokenizer_config.json says `add_bos_token`, else when the
 * post-processor adds it, else when the config names a BOS token (Llama 3's first
 * tokenizer.json adds none itself; Qwen names none).
 */
export function byteLevelTokenizer(t: TokenizerJson, file: string, vocabSize: number, bos: number, eos: number, config: { add_bos_token?: unknown; bos_token?: unknown; chat_template?: unknown } = {}): Tokenizer {
  const m = t.model!;
  const norm = t.normalizer as { type?: string } | null | undefined;
  if (norm && norm.type !== 'NFC') throw new RangeError(`loadModel: ${file}: normalizer ${JSON.stringify(norm).slice(0, 120)} is not supported with byte-level BPE (none or NFC)`);
  const tokens: string[] = new Array<string>(vocabSize).fill('');
  const filled = new Uint8Array(vocabSize);
  const put = (id: number, p: string) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new RangeError(`loadModel: ${file}: token id ${id} is outside the model's vocabulary (${vocabSize})`);
    tokens[id] = p;
    filled[id] = 1;
  };
  for (const [p, id] of Object.entries(m.vocab!)) put(id, p);
  // added tokens are cut out of text whole, and ids no token names (padding) decode to nothing
  const special: number[] = [], userDefined: number[] = [];
  for (const a of t.added_tokens ?? []) {
    put(a.id, a.content);
    special.push(a.id);
    if (a.special === false) userDefined.push(a.id);  // cut out of any text, as tokenizers does
  }
  for (let i = 0; i < vocabSize; i++) if (!filled[i]) special.push(i);
  const merges = m.merges!.map((mg) => (typeof mg === 'string' ? mg : mg.join(' ')));
  const addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token
    : (bos >= 0 && bos < vocabSize && JSON.stringify(t.post_processor ?? null).includes(JSON.stringify(tokens[bos]!))) || (config.bos_token !== undefined && config.bos_token !== null);
  return Tokenizer.fromByteLevel(tokens, {
    bos, eos, merges, pre: byteLevelPre(t.pre_tokenizer as PreTok, file), ignoreMerges: m.ignore_merges === true, nfc: norm?.type === 'NFC', special, userDefined, addBos,
    chatTemplate: chatTemplateOf(config.chat_template),
  });
}

/** tokenizer.json: byte-level BPE, or SentencePiece-style BPE (merge ranks become piece scores: earlier merge = higher score). */
export function readHfTokenizer(dir: string, vocabSize: number, bos: number, eos: number): Tokenizer {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new Error(`loadModel: ${dir} has no tokenizer.json`);
  const t = readJson(file) as TokenizerJson;
  if (typeof t !== 'object' || t === null) throw new TypeError(`loadModel: ${file}: expected a JSON object`);
  const m = t.model;
  if (m?.type !== 'BPE' || !m.vocab || !Array.isArray(m.merges)) throw new RangeError(`loadModel: ${file}: only BPE tokenizers are supported`);
  const norm = JSON.stringify(t.normalizer ?? null);
  const cf = path.join(dir, 'tokenizer_config.json');
  const cj = fs.existsSync(cf) ? (readJson(cf) as Record<string, unknown>) : {};
  const config = typeof cj === 'object' && cj !== null ? cj : {};
  if (JSON.stringify(t.pre_tokenizer ?? null).includes('ByteLevel')) return byteLevelTokenizer(t, file, vocabSize, bos, eos, config);
  // SentencePiece-style: spaces become U+2581 and one is prepended, by the normalizer (Prepend +
  // Replace: older conversions) or by a Metaspace pre-tokenizer that does not split (newer ones:
  // Mistral, Llama 2 re-uploads)
  const pre = t.pre_tokenizer as { type?: string; replacement?: string; prepend_scheme?: string; split?: boolean } | null | undefined;
  let addSpacePrefix = norm.includes('Prepend'), prefixUnlessSpace = false;
  if (pre?.type === 'Metaspace') {
    if (pre.replacement !== '\u2581' || pre.split !== false || norm !== 'null') {
      throw new RangeError(`loadModel: ${file}: pre-tokenizer ${JSON.stringify(pre).slice(0, 160)} is not supported (Metaspace with replacement U+2581, split false and no normalizer)`);
    }
    addSpacePrefix = pre.prepend_scheme !== 'never';
    prefixUnlessSpace = true;  // Metaspace prepends U+2581 only where the text does not start with one
  } else if (!norm.includes('\u2581')) {
    throw new RangeError(`loadModel: ${file}: tokenizer is neither SentencePiece-style BPE nor byte-level BPE`);
  }
  const pieces: string[] = new Array<string>(vocabSize).fill('');
  for (const [p, id] of Object.entries(m.vocab)) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new RangeError(`loadModel: ${file}: token id ${id} is outside the model's vocabulary (${vocabSize})`);
    pieces[id] = p;
  }
  for (const a of t.added_tokens ?? []) if (a.id >= 0 && a.id < vocabSize) pieces[a.id] = a.content;
  const ids = new Map(pieces.map((p, i) => [p, i]));
  const scores = new Array<number>(vocabSize).fill(-1e9);
  m.merges.forEach((mg, rank) => {
    const [a, b] = typeof mg === 'string' ? (mg.split(' ') as [string, string]) : mg;
    const id = ids.get(a + b);
    if (id !== undefined && scores[id] === -1e9) scores[id] = -rank;
  });
  return new Tokenizer({ pieces: packTextPieces(pieces), scores, bos, eos, addSpacePrefix, prefixUnlessSpace, chatTemplate: chatTemplateOf(config.chat_template) });
}
