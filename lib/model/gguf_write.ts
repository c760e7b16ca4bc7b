// gguf_write.ts - writes a loaded model as a GGUF v3 `llama` / `qwen2` / `qwen3` file in any type
// sparq writes (F32, F16, Q4_0 .. Q6_K, IQ4_NL / IQ4_XS, the Q4_K_M mix): the
// weights re-read from the model's file in f32 and quantized by the native
// quantizers (ggml's reference rounding for Q4_0 .. Q8_0), the SentencePiece
// vocabulary and the config as llama.cpp's metadata keys. Hugging Face Llama
// models (half-split RoPE rows) have their q / k rows put back in GGUF's
// interleaved order; Qwen's stay half-split, as llama.cpp runs them. Used by `npx sparq compress --out FILE.gguf --quantize TYPE`.
import { Rebuild } from './rebuild';
import type { Model } from './model';
import { GGML_F32, encodeTensor, ggmlTypeName, ggufTypeFor, llamaGgufMeta, writeGguf, type GgufWriteTensor } from './gguf';

/** rows of each head from the half-split order (i, i + hd/2) back to interleaved pairs (2i, 2i + 1) */
function toInterleaved(w: Float32Array, heads: number, hd: number, k: number): Float32Array {
  const o = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < hd / 2; i++) {
      o.set(w.subarray((h * hd + i) * k, (h * hd + i + 1) * k), (h * hd + 2 * i) * k);
      o.set(w.subarray((h * hd + hd / 2 + i) * k, (h * hd + hd / 2 + i + 1) * k), (h * hd + 2 * i + 1) * k);
    }
  return o;
}

export interface GgufWriteReport { tensors: number; bytes: number; types: Record<string, number> }

/** Writes `model` (loaded from a file, not pruned / quantized in memory) to `file` with linears in `type`. */
export async function writeGgufModel(model: Model, file: string, type: string,
                                     onProgress?: (p: { stage: 'load' | 'quantize'; done: number; total: number }) => void): Promise<GgufWriteReport> {
  const c = model.config;
  const hd = c.headDim ?? c.dim / c.heads, qd = c.heads * hd;
  ggufTypeFor(type, 'blk.0.attn_q.weight', 256);  // checks the type name
  const rb = await Rebuild.open('writeGguf', model, (p) => onProgress?.(p));
  try {
    const plan = rb.plan, interleave = plan.ropeNeox && c.arch === 'llama', kvd = c.kvHeads * hd;
    const tensors: GgufWriteTensor[] = [];
    const f32 = (ref: Parameters<Rebuild['tensor']>[0], n: number, k: number) => rb.tensor(ref, n, k).toArray() as Float32Array;
    const add = (name: string, a: Float32Array, n: number, k: number, linear: boolean) => {
      const t = linear ? ggufTypeFor(type, name, k, { layers: c.layers, tied: c.tiedEmbeddings === true }) : GGML_F32;
      tensors.push({ name, dims: n === 1 ? [k] : [k, n], type: t, data: encodeTensor(a, t, n, k) });
    };
    add('token_embd.weight', f32(plan.weights.embed, c.vocab, c.dim), c.vocab, c.dim, true);
    plan.weights.layers.forEach((L, l) => {
      onProgress?.({ stage: 'quantize', done: l, total: c.layers });
      const b = `blk.${l}.`;
      add(b + 'attn_norm.weight', f32(L.attnNorm, 1, c.dim), 1, c.dim, false);
      let q: Float32Array, k: Float32Array, v: Float32Array;
      if (L.wqkv) {
        const all = f32(L.wqkv, qd + 2 * kvd, c.dim);
        [q, k, v] = [all.slice(0, qd * c.dim), all.slice(qd * c.dim, (qd + kvd) * c.dim), all.slice((qd + kvd) * c.dim)];
      } else {
        [q, k, v] = [f32(L.wq, qd, c.dim), f32(L.wk, kvd, c.dim), f32(L.wv, kvd, c.dim)];
      }
      if (interleave) [q, k] = [toInterleaved(q, c.heads, hd, c.dim), toInterleaved(k, c.kvHeads, hd, c.dim)];
      add(b + 'attn_q.weight', q, qd, c.dim, true);
      add(b + 'attn_k.weight', k, kvd, c.dim, true);
      add(b + 'attn_v.weight', v, kvd, c.dim, true);
      if (L.bq) {  // biases (Qwen2), reordered with their rows
        const [bq, bk] = [f32(L.bq, 1, qd), f32(L.bk, 1, kvd)];
        add(b + 'attn_q.bias', interleave ? toInterleaved(bq, c.heads, hd, 1) : bq, 1, qd, false);
        add(b + 'attn_k.bias', interleave ? toInterleaved(bk, c.kvHeads, hd, 1) : bk, 1, kvd, false);
        add(b + 'attn_v.bias', f32(L.bv, 1, kvd), 1, kvd, false);
      }
      if (L.qNorm) {  // per-head q / k norms (Qwen3)
        add(b + 'attn_q_norm.weight', f32(L.qNorm, 1, hd), 1, hd, false);
        add(b + 'attn_k_norm.weight', f32(L.kNorm, 1, hd), 1, hd, false);
      }
      add(b + 'attn_output.weight', f32(L.wo, c.dim, qd), c.dim, qd, true);
      add(b + 'ffn_norm.weight', f32(L.ffnNorm, 1, c.dim), 1, c.dim, false);
      let gate: Float32Array, up: Float32Array;
      if (L.w13) {
        const all = f32(L.w13, 2 * c.hidden, c.dim);
        [gate, up] = [all.slice(0, c.hidden * c.dim), all.slice(c.hidden * c.dim)];
      } else {
        [gate, up] = [f32(L.w1, c.hidden, c.dim), f32(L.w3, c.hidden, c.dim)];
      }
      add(b + 'ffn_gate.weight', gate, c.hidden, c.dim, true);
      add(b + 'ffn_down.weight', f32(L.w2, c.dim, c.hidden), c.dim, c.hidden, true);
      add(b + 'ffn_up.weight', up, c.hidden, c.dim, true);
    });
    add('output_norm.weight', f32(plan.weights.finalNorm, 1, c.dim), 1, c.dim, false);
    if (plan.weights.ropeFreqs) add('rope_freqs.weight', f32(plan.weights.ropeFreqs, 1, hd >> 1), 1, hd >> 1, false);
    if (!c.tiedEmbeddings) add('output.weight', f32(plan.weights.output, c.vocab, c.dim), c.vocab, c.dim, true);
    onProgress?.({ stage: 'quantize', done: c.layers, total: c.layers });
    // the vocabulary: SentencePiece pieces as text with U+2581 for spaces, byte tokens <0xXX>, control ids;
    // or byte-level tokens in their spelling, special ones as control tokens
    const tok = model.tokenizer, spec = tok.toSpec(), dec = new TextDecoder();
    const bpe = tok.kind === 'bpe';
    const pieces = bpe ? spec.pieces.map((_, i) => tok.spelled(i)) : spec.pieces.map((p) => dec.decode(p).replace(/ /g, '\u2581'));
    const types = bpe
      ? pieces.map((_, i) => (tok.isUserDefined(i) ? 4 : tok.isSpecial(i) ? 3 : 1))
      : pieces.map((p, i) => (i === spec.bos || i === spec.eos ? 3 : /^<0x[0-9A-Fa-f]{2}>$/.test(p) ? 6 : i === 0 ? 2 : 1));
    const meta = llamaGgufMeta({
      arch: c.arch, name: `sparq ${type}`, dim: c.dim, hidden: c.hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, maxSeq: c.maxSeq,
      headDim: hd, ropeTheta: c.ropeTheta, normEps: c.normEps, tokens: pieces, scores: Array.from(spec.scores), tokenTypes: types,
      bos: spec.bos, eos: spec.eos, addSpacePrefix: spec.addSpacePrefix !== false,
      bpe: bpe ? { merges: spec.merges ?? [], pre: spec.pre ?? 'gpt2', addBos: spec.addBos !== false } : undefined, chatTemplate: tok.chatTemplate,
    });
    writeGguf(file, meta, tensors);
    const count: Record<string, number> = {};
    for (const t of tensors) count[ggmlTypeName(t.type)] = (count[ggmlTypeName(t.type)] ?? 0) + 1;
    return { tensors: tensors.length, bytes: tensors.reduce((a, t) => a + t.data.length, 0), types: count };
  } finally {
    rb.close();
  }
}
