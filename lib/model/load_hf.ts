// load_hf.ts - planHf(): the weights of a Hugging Face folder (config.json, *.safetensors, tokenizer.json).
import { readHfConfig, readHfTokenizer, readSafetensors, type SafetensorsEntry } from './hf';
import { WeightReader, backToBack, layerExtrasFrom, layerRefs, vectorRef, type LayerRefs, type Plan, type WeightRef } from './load_plan';

export async function planHf(dir: string, int8: boolean): Promise<Plan> {
  const c = readHfConfig(dir);
  const st = readSafetensors(dir);
  const tokenizer = readHfTokenizer(dir, c.vocab, c.bos, c.eos);
  const temp: { dispose(): void }[] = [];
  const readers = new Map<string, WeightReader>();  // one per shard: each file mapped once
  const reader = (file: string) => readers.get(file) ?? readers.set(file, new WeightReader(file, int8, temp)).get(file)!;
  const tensor = (name: string, shape: number[]) => {
    const t = st.get(name);
    if (!t) throw new RangeError(`loadModel: ${dir}: tensor ${name} is missing`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new RangeError(`loadModel: ${dir}: tensor ${name} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    if (!['F32', 'F16', 'BF16'].includes(t.dtype)) throw new RangeError(`loadModel: ${dir}: tensor ${name} is ${t.dtype}; sparq reads F32, F16 and BF16`);
    return t;
  };
  const code = (dtype: string) => (dtype === 'F16' ? 1 : 30);
  const f32 = async (name: string, shape: number[]): Promise<WeightRef> => {
    const t = tensor(name, shape), r = reader(t.file), count = shape.reduce((a, b) => a * b, 1);
    return t.dtype === 'F32' ? r.f32(t.offset, count) : r.widen([t.offset, t.bytes], code(t.dtype), count);
  };
  const lin = async (names: string[], ns: number[], k: number): Promise<WeightRef> => {
    const ts = names.map((nm, i) => tensor(nm, [ns[i]!, k]));
    const r = reader(ts[0]!.file), n = ns.reduce((a, b) => a + b, 0);
    if (ts[0]!.dtype === 'F32') return r.linear(ts.map((t, i) => [t.offset, ns[i]!] as [number, number]), k);
    return r.widenLinear(ts.flatMap((t) => [t.offset, t.bytes]), code(ts[0]!.dtype), n, k);
  };
  // fused when the parts share a file and a dtype, and, f32 ones used in place (mapped), lie back to back
  const fusable = (names: string[]) => {
    const ts = names.map((nm) => st.get(nm));
    if (ts.some((t) => !t || t.file !== ts[0]!.file || t.dtype !== ts[0]!.dtype)) return false;  // a missing part is reported when it is read
    return int8 || ts[0]!.dtype !== 'F32' || backToBack(ts as SafetensorsEntry[]);
  };
  const { dim, hidden, vocab } = c, hd = c.headDim, qd = c.heads * hd, kvd = c.kvHeads * hd;
  if (c.heads % c.kvHeads !== 0) throw new RangeError(`loadModel: ${dir}: num_attention_heads must be a multiple of num_key_value_heads`);
  for (const id of c.stopIds) if (id >= vocab) throw new RangeError(`loadModel: ${dir}: eos_token_id ${id} is outside the vocabulary`);
  const layers: LayerRefs[] = [];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    const layer = await layerRefs({
      attnNorm: p + 'input_layernorm.weight', ffnNorm: p + 'post_attention_layernorm.weight', q: p + 'self_attn.q_proj.weight',
      k: p + 'self_attn.k_proj.weight', v: p + 'self_attn.v_proj.weight', o: p + 'self_attn.o_proj.weight',
      gate: p + 'mlp.gate_proj.weight', up: p + 'mlp.up_proj.weight', down: p + 'mlp.down_proj.weight',
    }, dim, qd, kvd, hidden, (nm) => f32(nm, [dim]), lin, fusable);
    // q / k / v biases (Qwen2; Llama / Mistral with attention_bias) and per-head q / k norms (Qwen3)
    await layerExtrasFrom(layer, {
      bq: [p + 'self_attn.q_proj.bias', qd], bk: [p + 'self_attn.k_proj.bias', kvd], bv: [p + 'self_attn.v_proj.bias', kvd],
      qNorm: [p + 'self_attn.q_norm.weight', hd], kNorm: [p + 'self_attn.k_norm.weight', hd],
    }, (nm) => st.has(nm), (nm, n) => f32(nm, [n]), c.arch, `loadModel: ${dir}`);
    layers.push(layer);
  }
  const tied = c.tied || !st.has('lm_head.weight');
  const embed = await f32('model.embed_tokens.weight', [vocab, dim]);
  return {
    config: { arch: c.arch, dim, hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, vocab, maxSeq: c.maxSeq, ropeTheta: c.ropeTheta, normEps: c.normEps, tiedEmbeddings: tied,
      ...(c.ropeScaling ? { ropeScaling: c.ropeScaling } : {}) },
    tokenizer, stopIds: c.stopIds, ropeNeox: true, temp, headDim: hd,
    weights: {
      embed, finalNorm: await f32('model.norm.weight', [dim]), layers,
      output: tied ? (int8 ? await lin(['model.embed_tokens.weight'], [vocab], dim) : embed) : await lin(['lm_head.weight'], [vocab], dim),
      ...(c.ropeFreqs ? { ropeFreqs: vectorRef(c.ropeFreqs, temp) } : {}),
    },
  };
}
