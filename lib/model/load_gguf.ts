// load_gguf.ts - planGguf(): the weights, config and tokenizer of a GGUF v3 llama / qwen2 / qwen3 file.
import { GGML_F32, GGML_Q8_0, ggmlTypeName, ggmlTypes, readGguf } from './gguf';
import { Tokenizer, packTextPieces } from './tokenizer';
import { WeightReader, backToBack, layerExtrasFrom, layerRefs, vectorRef, type LayerRefs, type Plan, type WeightRef } from './load_plan';
import type { ModelArch, ModelConfig } from './model';

/** widenBlocks: quantized GGUF linears widened to f32 (exactly) instead of kept in their blocks (pruneModel / quantizeModel re-read them so). */
export async function planGguf(file: string, int8: boolean, widenBlocks = false): Promise<Plan> {
  const g = readGguf(file);
  const bad = (why: string): never => { throw new RangeError(`loadModel: ${file}: ${why}`); };
  const archName = g.meta.get('general.architecture');
  if (archName !== 'llama' && archName !== 'qwen2' && archName !== 'qwen3') bad(`architecture '${String(archName)}' is not supported (sparq runs llama, qwen2, qwen3)`);
  const arch = archName as ModelArch;
  const num = (k: string, dflt?: number): number => {
    const v = g.meta.get(`${arch}.${k}`);
    if (v === undefined) return dflt ?? bad(`metadata ${arch}.${k} is missing`);
    const n = Number(v);
    if (!Number.isFinite(n)) bad(`metadata ${arch}.${k} is not a number`);
    return n;
  };
  const dim = num('embedding_length'), layers = num('block_count'), hidden = num('feed_forward_length'), heads = num('attention.head_count');
  // f32 metadata: report the shortest decimal that rounds to the stored value (1e-5, not 9.99999974e-6)
  const short = (v: number) => { for (let p = 1; p < 10; p++) { const r = Number(v.toPrecision(p)); if (Math.fround(r) === Math.fround(v)) return r; } return v; };
  const kvHeads = num('attention.head_count_kv', heads), maxSeq = num('context_length'), normEps = short(num('attention.layer_norm_rms_epsilon', 1e-5));
  const ropeTheta = short(num('rope.freq_base', 10000));
  const tokModel = g.meta.get('tokenizer.ggml.model');
  if (tokModel !== 'llama' && tokModel !== 'gpt2') bad(`tokenizer '${String(tokModel)}' is not supported (SentencePiece 'llama' or byte-level BPE 'gpt2')`);
  const toks = g.meta.get('tokenizer.ggml.tokens'), scores = g.meta.get('tokenizer.ggml.scores');
  if (!Array.isArray(toks) || toks.some((t) => typeof t !== 'string')) return bad('tokenizer.ggml.tokens is missing');
  const vocab = toks.length;
  const id = (k: string, d: number) => { const v = Number(g.meta.get(k) ?? d); if (!Number.isInteger(v) || v < 0 || v >= vocab) bad(`${k} = ${v} is outside the vocabulary`); return v; };
  const bos = id('tokenizer.ggml.bos_token_id', 1), eos = id('tokenizer.ggml.eos_token_id', 2);
  let tokenizer: Tokenizer;
  const stopIds = [eos];
  const ct = g.meta.get('tokenizer.chat_template'), chatTemplate = typeof ct === 'string' ? ct : undefined;
  if (tokModel === 'gpt2') {
    // byte-level BPE: control (3) and user-defined (4) tokens are special; end-of-turn ids stop generation too
    const merges = g.meta.get('tokenizer.ggml.merges'), types = g.meta.get('tokenizer.ggml.token_type'), pre = g.meta.get('tokenizer.ggml.pre') ?? bad('tokenizer.ggml.pre is missing (the byte-level pre-tokenizer: llama-bpe, qwen2, gpt2)');
    if (!Array.isArray(merges) || merges.some((m) => typeof m !== 'string')) bad('tokenizer.ggml.merges is missing');
    if (typeof pre !== 'string') bad('tokenizer.ggml.pre is not a string');
    const special: number[] = [], userDefined: number[] = [];
    if (Array.isArray(types)) types.forEach((t, i) => { if (t === 3 || t === 4) special.push(i); if (t === 4) userDefined.push(i); });
    const addBos = g.meta.get('tokenizer.ggml.add_bos_token');
    for (const k of ['tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) if (g.meta.has(k)) { const e = id(k, eos); if (!stopIds.includes(e)) stopIds.push(e); }
    try {
      tokenizer = Tokenizer.fromByteLevel(toks as string[], { bos, eos, merges: merges as string[], pre: pre as string, special, userDefined, addBos: typeof addBos === 'boolean' ? addBos : pre === 'llama-bpe', chatTemplate });
    } catch (e) {
      return bad((e as Error).message);
    }
  } else {
    const sc = Array.isArray(scores) && scores.length === vocab ? scores.map(Number) : new Array<number>(vocab).fill(0);
    tokenizer = new Tokenizer({
      pieces: packTextPieces(toks as string[]), scores: sc, bos, eos,
      addSpacePrefix: g.meta.get('tokenizer.ggml.add_space_prefix') !== false, chatTemplate,
    });
  }
  const r = new WeightReader(file, int8);
  const tensor = (name: string, n: number, k: number) => {
    const t = g.tensors.get(name) ?? bad(`tensor ${name} is missing`);
    const want = n === 1 ? [k] : [k, n];
    if (t.dims.length !== want.length || t.dims.some((d, i) => d !== want[i])) bad(`tensor ${name} has shape [${t.dims.join(', ')}], expected [${want.join(', ')}] (ggml order)`);
    if (!ggmlTypes().has(t.type)) bad(`tensor ${name} is ${ggmlTypeName(t.type)}; sparq reads ${[...ggmlTypes().values()].map((x) => x.name).join(', ')}`);
    return t;
  };
  const f32 = async (name: string, n: number, k: number): Promise<WeightRef> => {
    const t = tensor(name, n, k);
    return t.type === GGML_F32 ? r.f32(t.offset, n * k) : r.widen([t.offset, t.bytes], t.type, n * k);
  };
  // one linear from tensors of the same type stored back to back in the weight (rows of each, in order)
  const lin = async (names: string[], ns: number[], k: number): Promise<WeightRef> => {
    const ts = names.map((nm, i) => tensor(nm, ns[i]!, k));
    const n = ns.reduce((a, b) => a + b, 0), type = ts[0]!.type;
    if (type === GGML_Q8_0 && widenBlocks) return r.q8(ts.map((t, i) => [t.offset, ns[i]!] as [number, number]), k);
    if (type === GGML_F32) return r.linear(ts.map((t, i) => [t.offset, ns[i]!] as [number, number]), k);
    if (ggmlTypes().get(type)!.quantized && !widenBlocks) return r.blocks(ts.flatMap((t) => [t.offset, t.bytes]), type);
    return r.widenLinear(ts.flatMap((t) => [t.offset, t.bytes]), type, n, k);
  };
  // fused when of one type, and, for tensors used in place (mapped), back to back in the file
  const inPlace = (type: number) => (type === GGML_F32 && !int8) || (ggmlTypes().get(type)?.quantized === true && !widenBlocks);
  const fusable = (names: string[]) => {
    const ts = names.map((nm) => g.tensors.get(nm));
    if (ts.some((t) => !t || t.type !== ts[0]!.type)) return false;  // a missing part is reported when it is read
    return !inPlace(ts[0]!.type) || backToBack(ts as { offset: number; bytes: number }[]);
  };
  // the head size: attention.key_length where given (Qwen3: 128 with dim 1024 and 16 heads), else dim / heads
  const hd = num('attention.key_length', dim / heads), kvd = kvHeads * hd, qd = heads * hd;
  if (!Number.isInteger(hd) || hd < 1 || heads % kvHeads !== 0) bad(`heads (${heads}) must divide dim (${dim}) (or attention.key_length be given) and be a multiple of kv heads (${kvHeads})`);
  if (num('attention.value_length', hd) !== hd) bad('attention.value_length differs from attention.key_length (sparq runs equal key and value heads)');
  // RoPE scaling: Llama 3.1's per-frequency factors come as the rope_freqs tensor; linear scaling as metadata
  const scaling = g.meta.get(`${arch}.rope.scaling.type`);
  let ropeFreqs: WeightRef | undefined, ropeScaling: ModelConfig['ropeScaling'];
  if (g.tensors.has('rope_freqs.weight')) {
    ropeFreqs = await f32('rope_freqs.weight', 1, hd >> 1);
    const factor = num('rope.scaling.factor', 0);
    ropeScaling = { type: 'llama3', ...(factor > 0 ? { factor } : {}) };
  } else if (scaling === 'linear') {
    const factor = num('rope.scaling.factor');
    if (!(factor > 0)) bad(`${arch}.rope.scaling.factor must be > 0`);
    if (factor !== 1) [ropeFreqs, ropeScaling] = [vectorRef(new Float32Array(hd >> 1).fill(factor), r.temp), { type: 'linear', factor }];
  } else if (scaling !== undefined && scaling !== 'none') {
    bad(`rope scaling '${String(scaling)}' is not supported (linear, or Llama 3.1's rope_freqs)`);
  }
  const tied = !g.tensors.has('output.weight');
  // a quantized embedding stays in its blocks (rows dequantized on lookup), and is the tied classifier as it is
  const et = g.tensors.get('token_embd.weight') ?? bad('tensor token_embd.weight is missing');
  const embedBlocks = ggmlTypes().get(et.type)?.quantized === true && !widenBlocks;
  const embed = embedBlocks ? await r.blocks([tensor('token_embd.weight', vocab, dim).offset, et.bytes], et.type) : await f32('token_embd.weight', vocab, dim);
  const L: LayerRefs[] = [];
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}.`;
    const layer = await layerRefs({
      attnNorm: b + 'attn_norm.weight', ffnNorm: b + 'ffn_norm.weight', q: b + 'attn_q.weight', k: b + 'attn_k.weight', v: b + 'attn_v.weight',
      o: b + 'attn_output.weight', gate: b + 'ffn_gate.weight', up: b + 'ffn_up.weight', down: b + 'ffn_down.weight',
    }, dim, qd, kvd, hidden, (nm) => f32(nm, 1, dim), lin, fusable);
    await layerExtrasFrom(layer, {
      bq: [b + 'attn_q.bias', qd], bk: [b + 'attn_k.bias', kvd], bv: [b + 'attn_v.bias', kvd], qNorm: [b + 'attn_q_norm.weight', hd], kNorm: [b + 'attn_k_norm.weight', hd],
    }, (nm) => g.tensors.has(nm), (nm, n) => f32(nm, 1, n), arch, `loadModel: ${file}`);
    L.push(layer);
  }
  return {
    config: { arch, dim, hidden, layers, heads, kvHeads, vocab, maxSeq, ropeTheta, normEps, tiedEmbeddings: tied, ...(ropeScaling ? { ropeScaling } : {}) },
    // llama.cpp's converter permutes Llama's q / k rows into interleaved pairs; Qwen's stay half-split (NeoX RoPE)
    tokenizer, stopIds, ropeNeox: arch !== 'llama', temp: r.temp, headDim: hd,
    weights: {
      ...(ropeFreqs ? { ropeFreqs } : {}),
      embed, finalNorm: await f32('output_norm.weight', 1, dim), layers: L,
      // tied: the embedding's own blocks, the f32 embedding, or an int8 copy (int8 mode, or a widened quantized embedding)
      output: tied ? (embedBlocks ? embed : int8 || ggmlTypes().get(et.type)!.quantized ? await lin(['token_embd.weight'], [vocab], dim) : embed) : await lin(['output.weight'], [vocab], dim),
    },
  };
}
