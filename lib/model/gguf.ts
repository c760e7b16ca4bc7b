// gguf.ts - the GGUF v3 container (llama.cpp): header, metadata key/values,
// tensor infos, aligned data section. The reader checks every length against
// the file before trusting it; the writer is used by the model generator.
import * as fs from 'node:fs';
import { loadNative } from '../native';
import { Tensor, f32ToF16 } from '../tensor';
import { regularFileSize } from './files';

export const GGML_F32 = 0, GGML_F16 = 1, GGML_Q8_0 = 8, GGML_BF16 = 30;

/** A ggml tensor type as the native block-format table describes it. */
export interface GgmlType { type: number; name: string; block: number; bytes: number; quantized: boolean; offsets: boolean }
let TYPES: Map<number, GgmlType> | undefined;
/** The ggml types sparq reads, by id (from the native table: sizes are never restated here). */
export function ggmlTypes(): Map<number, GgmlType> {
  TYPES ??= new Map(loadNative().ggmlTypes().map((t) => [t.type, t]));
  return TYPES;
}
/** The type named `name` ('Q4_K', case-insensitive), or undefined. */
export function ggmlTypeByName(name: string): GgmlType | undefined {
  for (const t of ggmlTypes().values()) if (t.name.toLowerCase() === name.toLowerCase()) return t;
  return undefined;
}
// names of types sparq does not read, for error messages
const OTHER_NAMES: Record<number, string> = {
  9: 'Q8_1', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 21: 'IQ3_S', 22: 'IQ2_S', 24: 'I8', 25: 'I16', 26: 'I32',
  27: 'I64', 28: 'F64', 29: 'IQ1_M', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};
export const ggmlTypeName = (t: number): string => ggmlTypes().get(t)?.name ?? OTHER_NAMES[t] ?? `type ${t}`;

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the innermost (row length) */
  dims: number[];
  type: number;
  /** absolute byte offset in the file */
  offset: number;
  bytes: number;
}

export interface GgufFile {
  version: number;
  meta: Map<string, GgufValue>;
  tensors: Map<string, GgufTensor>;
  fileBytes: number;
}

/** Bytes of a tensor of `count` elements of a type sparq reads (others, or a count that is not whole blocks: -1). */
export function ggmlBytes(type: number, count: number): number {
  const t = ggmlTypes().get(type);
  if (!t || count % t.block !== 0) return -1;
  return (count / t.block) * t.bytes;
}

/** Reads a GGUF file's header, metadata and tensor table (not the tensor data). */
export function readGguf(file: string): GgufFile {
  regularFileSize(file, 'loadModel');
  const fd = fs.openSync(file, 'r');
  const size = fs.fstatSync(fd).size;
  const fail = (why: string): never => { throw new RangeError(`loadModel: ${file} is not a valid GGUF file: ${why}`); };
  // buffered little-endian reader over the file
  let buf = Buffer.alloc(0), bufAt = 0, pos = 0;
  const need = (n: number) => {
    if (pos + n > size) fail(`unexpected end of file at byte ${pos} (truncated?)`);
    if (pos >= bufAt && pos + n <= bufAt + buf.length) return;
    const len = Math.min(size - pos, Math.max(n, 1 << 20));
    buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, pos);
    bufAt = pos;
  };
  const u32 = () => { need(4); const v = buf.readUInt32LE(pos - bufAt); pos += 4; return v; };
  // two halves, not a BigInt
  const u64 = () => {
    need(8);
    const lo = buf.readUInt32LE(pos - bufAt), hi = buf.readUInt32LE(pos - bufAt + 4);
    pos += 8;
    if (hi > 0x1fffff) fail(`a 64-bit count or size is absurd (${(BigInt(hi) << 32n) | BigInt(lo)})`);
    return hi * 2 ** 32 + lo;
  };
  // one bounds check per string where it lies in the buffer (a vocabulary reads 32K-150K of them)
  const str = () => {
    let o = pos - bufAt;
    if (o + 8 > buf.length) { need(8); o = pos - bufAt; }
    const lo = buf.readUInt32LE(o), hi = buf.readUInt32LE(o + 4);
    if (hi !== 0 || lo > 1 << 24) fail(`a string of ${hi * 2 ** 32 + lo} bytes`);
    pos += 8;
    if (o + 8 + lo > buf.length) { need(lo); o = pos - bufAt - 8; }
    pos += lo;
    return buf.toString('utf8', o + 8, o + 8 + lo);
  };
  const value = (t: number, depth = 0): GgufValue => {
    need(1);
    const o = pos - bufAt;
    switch (t) {
      case 0: pos += 1; return buf.readUInt8(o);
      case 1: pos += 1; return buf.readInt8(o);
      case 2: need(2); pos += 2; return buf.readUInt16LE(pos - 2 - bufAt);
      case 3: need(2); pos += 2; return buf.readInt16LE(pos - 2 - bufAt);
      case 4: return u32();
      case 5: need(4); pos += 4; return buf.readInt32LE(pos - 4 - bufAt);
      case 6: need(4); pos += 4; return buf.readFloatLE(pos - 4 - bufAt);
      case 7: pos += 1; return buf.readUInt8(o) !== 0;
      case 8: return str();
      case 9: {
        if (depth > 2) fail('arrays nested too deeply');
        const et = u32(), n = u64();
        if (n > size) fail(`an array of ${n} elements`);
        const a: GgufValue[] = new Array(n);
        if (et === 6) {  // f32 (a vocabulary's scores): one bounds check for the lot
          need(4 * n);
          for (let i = 0; i < n; i++) a[i] = buf.readFloatLE(pos - bufAt + 4 * i);
          pos += 4 * n;
        } else if (et === 5) {  // i32 (token types)
          need(4 * n);
          for (let i = 0; i < n; i++) a[i] = buf.readInt32LE(pos - bufAt + 4 * i);
          pos += 4 * n;
        } else if (et === 8) {  // strings (a vocabulary): without the per-value dispatch
          for (let i = 0; i < n; i++) a[i] = str();
        } else {
          for (let i = 0; i < n; i++) a[i] = value(et, depth + 1);
        }
        return a;
      }
      case 10: need(8); pos += 8; return buf.readBigUInt64LE(pos - 8 - bufAt);
      case 11: need(8); pos += 8; return buf.readBigInt64LE(pos - 8 - bufAt);
      case 12: need(8); pos += 8; return buf.readDoubleLE(pos - 8 - bufAt);
      default: return fail(`unknown metadata value type ${t}`);
    }
  };
  try {
    need(4);
    if (buf.toString('latin1', 0, 4) !== 'GGUF') fail('no GGUF magic');
    pos = 4;
    const version = u32();
    if (version !== 2 && version !== 3) fail(`version ${version} (sparq reads versions 2 and 3)`);
    const nTensors = u64(), nKv = u64();
    if (nTensors > 1 << 20 || nKv > 1 << 20) fail(`${nTensors} tensors / ${nKv} metadata entries`);
    const meta = new Map<string, GgufValue>();
    for (let i = 0; i < nKv; i++) {
      const k = str();
      meta.set(k, value(u32()));
    }
    const infos: Omit<GgufTensor, 'offset' | 'bytes'>[] = [];
    const rel: number[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = str(), nd = u32();
      if (nd < 1 || nd > 4) fail(`tensor ${name} has ${nd} dimensions`);
      const dims = Array.from({ length: nd }, () => u64());
      const type = u32();
      rel.push(u64());
      infos.push({ name, dims, type });
    }
    const align = Number(meta.get('general.alignment') ?? 32);
    if (!Number.isInteger(align) || align < 1 || align > 1 << 16) fail(`alignment ${align}`);
    const dataStart = Math.ceil(pos / align) * align;
    const tensors = new Map<string, GgufTensor>();
    infos.forEach((t, i) => {
      const count = t.dims.reduce((a, b) => a * b, 1);
      const bytes = ggmlBytes(t.type, count);
      const offset = dataStart + rel[i]!;
      if (bytes >= 0 && offset + bytes > size) fail(`tensor ${t.name} (${bytes} bytes at ${offset}) runs past the end of the file (${size} bytes; truncated?)`);
      const tt = ggmlTypes().get(t.type);
      if (tt && t.dims[0]! % tt.block !== 0) fail(`${tt.name} tensor ${t.name} has rows of ${t.dims[0]} (not a multiple of ${tt.block})`);
      tensors.set(t.name, { ...t, offset, bytes });
    });
    return { version, meta, tensors, fileBytes: size };
  } finally {
    fs.closeSync(fd);
  }
}

// --- encoding weights ---------------------------------------------------------
/** GGUF weight types sparq writes: a ggml type name, or q4_k_m (llama.cpp's mix: Q6_K for the classifier,
 *  attn_v and ffn_down, Q4_K elsewhere). Norms are always F32. */
export const GGUF_WRITE_TYPES = ['f32', 'f16', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs', 'q4_k_m'];

/** llama.cpp's layers that get more bits in its _M mixes (attn_v, ffn_down): the first and last eighth, every third between. */
export function moreBitsLayer(i: number, n: number): boolean {
  const e = Math.trunc(n / 8);
  return i < e || i >= Math.trunc((7 * n) / 8) || (i - e) % 3 === 2;
}

/** What a GGUF type choice needs to know of the model: its layer count, and whether the embedding is the classifier. */
export interface GgufMix { layers: number; tied: boolean }

// llama.cpp's fallback when rows are not whole blocks of the type (tensor_type_fallback), then F16
const FALLBACK: Record<string, string> = { q2_k: 'q4_0', q3_k: 'q4_0', q4_k: 'q5_0', q5_k: 'q5_1', q6_k: 'q8_0', iq4_xs: 'iq4_nl' };

/**
 * The type a linear named `name` (GGUF tensor name) with rows of k gets under `spec`, as llama.cpp's
 * quantizer chooses it: a single type is every linear in it (llama-quantize --pure); `q4_k_m` is its mix
 * (Q4_K; Q6_K for the classifier, a tied embedding, and attn_v / ffn_down of the layers moreBitsLayer
 * picks); rows that are not whole blocks fall back as llama.cpp's do (Q4_K -> Q5_0, Q6_K -> Q8_0 ...,
 * then F16).
 */
export function ggufTypeFor(spec: string, name: string, k: number, mix: GgufMix = { layers: 1, tied: false }): number {
  const s = spec.toLowerCase();
  if (!GGUF_WRITE_TYPES.includes(s)) throw new RangeError(`unknown GGUF weight type '${spec}' (expected ${GGUF_WRITE_TYPES.join(', ')})`);
  if (s === 'f32') return GGML_F32;
  if (s === 'f16') return GGML_F16;
  let want = s;
  if (s === 'q4_k_m') {
    const layer = /^blk\.(\d+)\.(attn_v|ffn_down)\./.exec(name);
    const classifier = name.startsWith('output.') || (mix.tied && name.startsWith('token_embd.'));
    want = classifier || (layer && moreBitsLayer(Number(layer[1]), mix.layers)) ? 'q6_k' : 'q4_k';
  }
  let t = ggmlTypeByName(want)!;
  if (k % t.block) {
    if (FALLBACK[want]) t = ggmlTypeByName(FALLBACK[want]!)!;
    if (k % t.block) return GGML_F16;
  }
  return t.type;
}

/** rows [n, k] of f32 encoded as `type` (F32, F16 or a block type, by the native quantizer) */
export function encodeTensor(a: Float32Array, type: number, n: number, k: number): Uint8Array {
  if (type === GGML_F32) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (type === GGML_F16) return new Uint8Array(Uint16Array.from(a, f32ToF16).buffer);
  const nat = loadNative(), t = Tensor.from(a, [n * k]);
  try {
    const st = nat.ggmlQuantize(t._storage, t._offset, type, n, k, true);
    const out = new Uint8Array(st.read(0, st.byteLength));
    st.dispose();
    return out;
  } finally {
    t.dispose();
  }
}

/** What a GGUF `llama` / `qwen2` / `qwen3` file's metadata says (llama.cpp's keys): the shape and the vocabulary. */
export interface LlamaGgufMeta {
  /** general.architecture and the prefix of the shape keys (default 'llama') */
  arch?: 'llama' | 'qwen2' | 'qwen3';
  name: string; dim: number; hidden: number; layers: number; heads: number; kvHeads: number; maxSeq: number; headDim: number;
  ropeTheta: number; normEps: number;
  /** pieces as text, U+2581 for spaces (SentencePiece), or in the byte-level spelling (bpe) */
  tokens: string[]; scores: number[]; tokenTypes: number[]; bos: number; eos: number; addSpacePrefix: boolean;
  /** a byte-level vocabulary (tokenizer.ggml.model 'gpt2'): its merges, pre-tokenizer name and BOS default */
  bpe?: { merges: string[]; pre: string; addBos: boolean };
  /** tokenizer.chat_template */
  chatTemplate?: string;
}
export function llamaGgufMeta(m: LlamaGgufMeta): [string, Typed][] {
  const a = m.arch ?? 'llama';
  return [
    ['general.architecture', { type: 'str', value: a }],
    ['general.name', { type: 'str', value: m.name }],
    [`${a}.context_length`, { type: 'u32', value: m.maxSeq }],
    [`${a}.embedding_length`, { type: 'u32', value: m.dim }],
    [`${a}.block_count`, { type: 'u32', value: m.layers }],
    [`${a}.feed_forward_length`, { type: 'u32', value: m.hidden }],
    [`${a}.attention.head_count`, { type: 'u32', value: m.heads }],
    [`${a}.attention.head_count_kv`, { type: 'u32', value: m.kvHeads }],
    // the head size, where it is not dim / heads (Qwen3), as llama.cpp writes it
    ...(m.headDim * m.heads !== m.dim || a === 'qwen3'
      ? ([[`${a}.attention.key_length`, { type: 'u32', value: m.headDim }], [`${a}.attention.value_length`, { type: 'u32', value: m.headDim }]] as [string, Typed][])
      : []),
    [`${a}.rope.dimension_count`, { type: 'u32', value: m.headDim }],
    [`${a}.rope.freq_base`, { type: 'f32', value: m.ropeTheta }],
    [`${a}.attention.layer_norm_rms_epsilon`, { type: 'f32', value: m.normEps }],
    ...(m.bpe
      ? ([
          ['tokenizer.ggml.model', { type: 'str', value: 'gpt2' }],
          ['tokenizer.ggml.pre', { type: 'str', value: m.bpe.pre }],
          ['tokenizer.ggml.tokens', { type: 'arr', elem: 'str', value: m.tokens }],
          ['tokenizer.ggml.token_type', { type: 'arr', elem: 'i32', value: m.tokenTypes }],
          ['tokenizer.ggml.merges', { type: 'arr', elem: 'str', value: m.bpe.merges }],
          ['tokenizer.ggml.bos_token_id', { type: 'u32', value: m.bos }],
          ['tokenizer.ggml.eos_token_id', { type: 'u32', value: m.eos }],
          ['tokenizer.ggml.add_bos_token', { type: 'bool', value: m.bpe.addBos }],
        ] as [string, Typed][])
      : ([
          ['tokenizer.ggml.model', { type: 'str', value: 'llama' }],
          ['tokenizer.ggml.tokens', { type: 'arr', elem: 'str', value: m.tokens }],
          ['tokenizer.ggml.scores', { type: 'arr', elem: 'f32', value: m.scores }],
          ['tokenizer.ggml.token_type', { type: 'arr', elem: 'i32', value: m.tokenTypes }],
          ['tokenizer.ggml.bos_token_id', { type: 'u32', value: m.bos }],
          ['tokenizer.ggml.eos_token_id', { type: 'u32', value: m.eos }],
          ['tokenizer.ggml.add_space_prefix', { type: 'bool', value: m.addSpacePrefix }],
        ] as [string, Typed][])),
    ...(m.chatTemplate !== undefined ? ([['tokenizer.chat_template', { type: 'str', value: m.chatTemplate }]] as [string, Typed][]) : []),
  ];
}

// --- writer ------------------------------------------------------------------
export interface GgufWriteTensor {
  name: string;
  dims: number[];
  type: number;
  data: Uint8Array;
}

export type Typed = { type: 'u32' | 'i32' | 'f32' | 'str' | 'bool'; value: number | string | boolean } | { type: 'arr'; elem: 'str' | 'f32' | 'i32'; value: (string | number)[] };

/** Writes a GGUF v3 file (alignment 32). */
export function writeGguf(file: string, meta: [string, Typed][], tensors: GgufWriteTensor[]): void {
  const parts: Buffer[] = [];
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
  const i32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); parts.push(b); };
  const f32 = (v: number) => { const b = Buffer.alloc(4); b.writeFloatLE(v); parts.push(b); };
  const u64 = (v: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
  const str = (s: string) => { const b = Buffer.from(s, 'utf8'); u64(b.length); parts.push(b); };
  parts.push(Buffer.from('GGUF', 'latin1'));
  u32(3);
  u64(tensors.length);
  u64(meta.length);
  const code = { u32: 4, i32: 5, f32: 6, bool: 7, str: 8 } as const;
  for (const [k, v] of meta) {
    str(k);
    if (v.type === 'arr') {
      u32(9);
      u32(code[v.elem]);
      u64(v.value.length);
      for (const e of v.value) v.elem === 'str' ? str(e as string) : v.elem === 'f32' ? f32(e as number) : i32(e as number);
    } else {
      u32(code[v.type]);
      if (v.type === 'str') str(v.value as string);
      else if (v.type === 'bool') parts.push(Buffer.from([v.value ? 1 : 0]));
      else if (v.type === 'f32') f32(v.value as number);
      else if (v.type === 'i32') i32(v.value as number);
      else u32(v.value as number);
    }
  }
  let off = 0;
  const offs: number[] = [];
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(t.type);
    offs.push(off);
    u64(off);
    off += Math.ceil(t.data.length / 32) * 32;
  }
  const head = Buffer.concat(parts);
  const pad = (n: number) => Buffer.alloc((32 - (n % 32)) % 32);
  // written next to the target, then renamed over it: a model mapped from the
  // old file (even the one being rewritten) keeps reading the old bytes
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(tmp, 'wx');
  try {
    try {
      fs.writeSync(fd, head);
      fs.writeSync(fd, pad(head.length));
      for (const t of tensors) {
        fs.writeSync(fd, t.data);
        fs.writeSync(fd, pad(t.data.length));
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
