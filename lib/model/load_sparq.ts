// load_sparq.ts - planSparq(): the weights of a file written by saveModel() (safetensors with sparq.* metadata).
import { loadNative, type SavedPart } from '../native';
import { ggmlTypes } from './gguf';
import { readSafetensorsFile, type SafetensorsEntry } from './hf';
import { Tokenizer, type TokenizerSpec } from './tokenizer';
import { WeightReader, layerExtrasFrom, type LayerRefs, type Plan, type WeightRef } from './load_plan';
import type { ModelArch, ModelConfig } from './model';

/** A file written by saveModel(): config and tokenizer from the metadata, each linear as it was saved. */
export async function planSparq(file: string, int8: boolean, widenBlocks = false): Promise<Plan> {
  const { tensors, metadata } = readSafetensorsFile(file);
  const bad = (why: string): never => { throw new RangeError(`loadModel: ${file}: ${why}`); };
  // a JSON object (or array) from the metadata; anything else (null, a number) is an error
  const json = <T>(key: string, array = false): T => {
    const v = metadata[key];
    if (v === undefined) return bad(`metadata ${key} is missing`);
    let o: unknown;
    try { o = JSON.parse(v); } catch { return bad(`metadata ${key} is not JSON`); }
    if (array ? !Array.isArray(o) : typeof o !== 'object' || o === null || Array.isArray(o)) bad(`metadata ${key} must be a JSON ${array ? 'array' : 'object'}`);
    return o as T;
  };
  if (metadata['sparq.format'] !== '1') bad(`sparq.format ${String(metadata['sparq.format'])} is not supported (this version reads 1)`);
  const cfg = json<ModelConfig & { ropeNeox: boolean }>('sparq.config');
  const ints = ['dim', 'hidden', 'layers', 'heads', 'kvHeads', 'headDim', 'vocab', 'maxSeq'] as const;
  for (const k of ints) if (!Number.isInteger(cfg[k]) || cfg[k] < 1 || cfg[k] > 2 ** 24) bad(`config.${k} must be an integer in [1, 2^24]`);
  if (cfg.heads % cfg.kvHeads) bad('config.heads must be a multiple of kvHeads');
  const arch: ModelArch = cfg.arch === undefined ? 'llama' : ['llama', 'qwen2', 'qwen3'].includes(cfg.arch) ? cfg.arch : bad(`config.arch '${String(cfg.arch)}' is not supported`);
  const tk = json<{ pieces: string[]; scores: number[]; bos: number; eos: number; addSpacePrefix: boolean; prefixUnlessSpace?: boolean } & Pick<TokenizerSpec, 'kind' | 'merges' | 'pre' | 'ignoreMerges' | 'nfc' | 'special' | 'userDefined' | 'addBos' | 'chatTemplate'>>('sparq.tokenizer');
  if (!Array.isArray(tk.pieces) || tk.pieces.length !== cfg.vocab || !Array.isArray(tk.scores) || tk.scores.length !== cfg.vocab) bad('the tokenizer does not match the vocabulary');
  for (const id of [tk.bos, tk.eos]) if (!Number.isInteger(id) || id < 0 || id >= cfg.vocab) bad('tokenizer bos / eos are outside the vocabulary');
  const spec: TokenizerSpec = { pieces: tk.pieces.map((p) => new Uint8Array(Buffer.from(String(p), 'base64'))), scores: tk.scores.map(Number), bos: tk.bos, eos: tk.eos, addSpacePrefix: tk.addSpacePrefix !== false,
    ...(tk.prefixUnlessSpace === true ? { prefixUnlessSpace: true } : {}) };
  if (tk.chatTemplate !== undefined) spec.chatTemplate = typeof tk.chatTemplate === 'string' ? tk.chatTemplate : bad('the chat template is not a string');
  if (tk.kind === 'bpe') {
    // a byte-level vocabulary: its merges, pre-tokenizer and special tokens as saved
    if (!Array.isArray(tk.merges) || tk.merges.some((m) => typeof m !== 'string') || typeof tk.pre !== 'string') bad('the byte-level tokenizer has no merges / pre-tokenizer');
    if (!Array.isArray(tk.special) || tk.special.some((id) => !Number.isInteger(id) || id < 0 || id >= cfg.vocab)) bad('the byte-level tokenizer lists special tokens outside the vocabulary');
    const user = Array.isArray(tk.userDefined) ? tk.userDefined : [];
    Object.assign(spec, { kind: 'bpe', merges: tk.merges, pre: tk.pre, ignoreMerges: tk.ignoreMerges === true, nfc: tk.nfc === true, special: tk.special, userDefined: user, addBos: tk.addBos !== false });
  }
  const stop = json<number[]>('sparq.stop', true);
  if (!Array.isArray(stop) || stop.some((id) => !Number.isInteger(id) || id < 0 || id >= cfg.vocab)) bad('sparq.stop must list token ids of the vocabulary');
  const linears = json<Record<string, { kind: string; type?: number; group?: number; actScale?: number; asymmetric?: boolean; format?: string; int8?: boolean; N?: number; M?: number; nnz?: number } | boolean>>('sparq.linears');
  const r = new WeightReader(file, int8);
  const T = (name: string, dtype: string, shape: number[]): SafetensorsEntry => {
    const t = tensors.get(name) ?? bad(`tensor ${name} is missing`);
    if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) bad(`tensor ${name} is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`);
    return t;
  };
  const f32 = (name: string, shape: number[]) => r.f32(T(name, 'F32', shape).offset, shape.reduce((a, b) => a * b, 1));
  const nat = loadNative();
  const formats = new Map(nat.linearFormats().map((f) => [f.name, f.loads]));
  const lin = async (name: string, n: number, k: number): Promise<WeightRef> => {
    const d = linears[name];
    if (typeof d !== 'object' || d === null) return bad(`sparq.linears has no entry for ${name}`);
    if (d.kind === 'f32') return r.linear([[T(`${name}.weight`, 'F32', [n, k]).offset, n]], k);
    if (d.kind === 'ggml') {
      const t = ggmlTypes().get(d.type ?? -1);
      if (!t?.quantized || k % t.block !== 0) return bad(`${name}: bad GGUF block type ${String(d.type)}`);
      const bt = T(`${name}.blocks`, 'U8', [n, (k / t.block) * t.bytes]);
      if (widenBlocks) return r.widen([bt.offset, bt.bytes], t.type, n * k);  // pruneModel / quantizeModel re-read f32
      return r.blocks([bt.offset, bt.bytes], t.type);
    }
    if (formats.get(d.kind)) {  // a format the native table loads from its tensors (int8, int4, sparse)
      // read, not mapped: the tensors are converted, and the mapping's pages would stay resident
      const parts: SavedPart[] = [];
      try {
        for (const [tn, t] of tensors) {
          if (!tn.startsWith(name + '.')) continue;
          const storage = await nat.readFile(file, t.offset, Math.max(t.bytes, 1));
          parts.push({ suffix: tn.slice(name.length + 1), dtype: t.dtype, shape: t.shape, storage, offset: 0, bytes: t.bytes });
        }
        return r.keep(await nat.loadLinear(d, name, n, k, parts));
      } finally {
        for (const p of parts) p.storage.dispose();
      }
    }
    return bad(`${name}: unknown kind ${String(d.kind)}`);
  };
  const { dim, hidden, vocab } = cfg;
  const hd = cfg.headDim, qd = cfg.heads * hd, kvd = cfg.kvHeads * hd;
  const embedEntry = linears.embed;  // an embedding kept in GGUF blocks
  const embed = typeof embedEntry === 'object' && embedEntry?.kind === 'ggml' ? await lin('embed', vocab, dim) : await f32('embed', [vocab, dim]);
  const layers: LayerRefs[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const p = `layers.${l}.`;
    const L: LayerRefs = {
      attnNorm: await f32(p + 'attn_norm', [dim]), ffnNorm: await f32(p + 'ffn_norm', [dim]),
      wo: await lin(p + 'wo', dim, qd), w2: await lin(p + 'w2', dim, hidden),
    };
    if (linears[p + 'wqkv'] !== undefined) L.wqkv = await lin(p + 'wqkv', qd + 2 * kvd, dim);
    else [L.wq, L.wk, L.wv] = [await lin(p + 'wq', qd, dim), await lin(p + 'wk', kvd, dim), await lin(p + 'wv', kvd, dim)];
    if (linears[p + 'w13'] !== undefined) L.w13 = await lin(p + 'w13', 2 * hidden, dim);
    else [L.w1, L.w3] = [await lin(p + 'w1', hidden, dim), await lin(p + 'w3', hidden, dim)];
    await layerExtrasFrom(L, { bq: [p + 'bq', qd], bk: [p + 'bk', kvd], bv: [p + 'bv', kvd], qNorm: [p + 'q_norm', hd], kNorm: [p + 'k_norm', hd] },
      (nm) => tensors.has(nm), (nm, n) => f32(nm, [n]), arch, `loadModel: ${file}`);
    layers.push(L);
  }
  const tied = linears.tied === true;  // the classifier is the f32 embedding itself (not written twice)
  const { ropeNeox, headDim: _hd, ...config } = cfg;
  void _hd;
  return {
    config: { ...config, arch, tiedEmbeddings: config.tiedEmbeddings === true }, tokenizer: new Tokenizer(spec), stopIds: stop, ropeNeox: ropeNeox === true, temp: r.temp,
    weights: { embed, finalNorm: await f32('final_norm', [dim]), layers, output: tied ? (int8 && 'storage' in embed && !embed.ggml ? await r.linear([[T('embed', 'F32', [vocab, dim]).offset, vocab]], dim) : embed) : await lin('output', vocab, dim),
      ...(tensors.has('rope_freqs') ? { ropeFreqs: await f32('rope_freqs', [hd >> 1]) } : {}) },
    headDim: hd, derived: Boolean(metadata['sparq.prune'] || metadata['sparq.quantize']),
  };
}
