// GGUF models in every quantized type sparq reads, written by sparq's own
// quantizers: each loads with its linears kept in blocks, and its logits match
// the same model dequantized to F32 (by the spec reference in ggml_ref.ts)
// within the error of per-32 int8 activations, at prefill and decode. Mixed files (the Q4_K_M layout), a quantized
// tied embedding, saving, truncated files and unknown types.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, quantizeModel, saveModel } from '../lib/index';
import { GGML_F32, readGguf, writeGguf } from '../lib/model/gguf';
import { writeRandomModel, type SynthConfig } from '../lib/model/synth';
import { SPEC, dequantize } from './ggml_ref';
import { relErr } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-gguf-types-'));
// dims a multiple of 256 so that every type (K types included) applies to every linear
const cfg: SynthConfig = { dim: 256, hidden: 512, layers: 2, heads: 4, kvHeads: 2, vocab: 400, maxSeq: 64, seed: 5 };
const ids = [1, 260, 200, 17, 45, 399, 3, 260, 100, 101, 102, 7];

type MetaValue = Parameters<typeof writeGguf>[1][number][1];
function metaOf(src: string): [string, MetaValue][] {
  return [...readGguf(src).meta].map(([k, v]): [string, MetaValue] => {
    if (Array.isArray(v)) return [k, typeof v[0] === 'string' ? { type: 'arr', elem: 'str', value: v as string[] } : k.endsWith('token_type') ? { type: 'arr', elem: 'i32', value: v as number[] } : { type: 'arr', elem: 'f32', value: v as number[] }];
    if (typeof v === 'string') return [k, { type: 'str', value: v }];
    return [k, { type: Number.isInteger(v) && !k.includes('eps') && !k.includes('freq') ? 'u32' : 'f32', value: Number(v) }];
  });
}

/** The file with every quantized tensor replaced by its F32 dequantization (spec reference). */
function dequantizedCopy(src: string, dst: string): string {
  const g = readGguf(src), raw = fs.readFileSync(src);
  const tensors = [...g.tensors.values()].map((t) => {
    const data = new Uint8Array(raw.subarray(t.offset, t.offset + t.bytes));
    if (!SPEC[t.type]) return { name: t.name, dims: t.dims, type: t.type, data };
    const count = t.dims.reduce((a, b) => a * b, 1);
    const f = dequantize(t.type, data, count / SPEC[t.type]!.block);
    return { name: t.name, dims: t.dims, type: GGML_F32, data: new Uint8Array(f.buffer) };
  });
  writeGguf(dst, metaOf(src), tensors);
  return dst;
}

/** prefill logits of every token, and the logits of token-by-token decoding */
async function run(file: string): Promise<{ prefill: Float32Array; decode: Float32Array }> {
  const m = await loadModel(file);
  try {
    const prefill = await m.forwardAll(ids);
    m.reset();
    const decode = new Float32Array(ids.length * cfg.vocab);
    for (let i = 0; i < ids.length; i++) decode.set(await m.forward([ids[i]!]), i * cfg.vocab);
    return { prefill, decode };
  } finally {
    m.dispose();
  }
}

// Both paths multiply int8 activations (per block of 32, step max|x| / 127): each linear's
// relative error is ~ 0.3-0.5% (the rounding error of 127 levels on Gaussian-like rows),
// compounded over 2 layers x 4 linears and the classifier. 3e-2 leaves room for the worst
// of random draws; the measured values are printed.
const BOUND = 3e-2;

describe('GGUF models in every quantized type', function () {
  this.timeout(300000);
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const types = [...Object.values(SPEC).map((s) => s.name.toLowerCase()), 'q4_k_m'];
  it(`${types.join(', ')}: prefill and decode within ${BOUND} of the dequantized F32 model`, async () => {
    const report: string[] = [];
    for (const t of types) {
      const dir = path.join(tmp, t);
      const file = writeRandomModel(dir, cfg, [`gguf-${t}`])[`gguf-${t}`]!;
      const g = readGguf(file);
      const q = g.tensors.get('blk.0.attn_q.weight')!;
      if (t !== 'q4_k_m') expect(SPEC[q.type]?.name.toLowerCase(), `${t}: the fixture holds ${t} linears`).to.equal(t);
      else {
        // llama.cpp's mix for 2 layers: attn_v / ffn_down of layer 1 (>= 7/8 of 2) in Q6_K, layer 0 in Q4_K
        const ty = (n: string) => SPEC[g.tensors.get(n)!.type]?.name;
        expect([ty('blk.0.attn_q.weight'), ty('blk.0.ffn_down.weight'), ty('blk.1.ffn_down.weight'), ty('blk.1.attn_v.weight'), ty('output.weight')])
          .to.deep.equal(['Q4_K', 'Q4_K', 'Q6_K', 'Q6_K', 'Q6_K']);
      }
      const a = await run(file), b = await run(dequantizedCopy(file, path.join(dir, 'f32.gguf')));
      const ep = relErr(a.prefill, b.prefill), ed = relErr(a.decode, b.decode);
      report.push(`${t} ${ep.toExponential(1)} / ${ed.toExponential(1)}`);
      expect(ep, `${t} prefill`).to.be.below(BOUND);
      expect(ed, `${t} decode`).to.be.below(BOUND);
    }
    console.log(`      relative logit error vs the dequantized F32 model (prefill / decode): ${report.join(', ')}`);
  });

  it('a tied classifier over a quantized embedding runs on the embedding blocks; saved models keep the blocks', async () => {
    const dir = path.join(tmp, 'tied');
    const file = writeRandomModel(dir, { ...cfg, tied: true, seed: 9 }, ['gguf-q4_k'])['gguf-q4_k']!;
    expect(readGguf(file).tensors.has('output.weight')).to.equal(false);
    const a = await run(file), b = await run(dequantizedCopy(file, path.join(dir, 'f32.gguf')));
    expect(relErr(a.prefill, b.prefill)).to.be.below(BOUND);
    expect(relErr(a.decode, b.decode)).to.be.below(BOUND);
    const m = await loadModel(file);
    const saved = path.join(dir, 'saved.safetensors');
    await saveModel(m, saved);
    const bytes = m.nativeBytes;
    m.dispose();
    const c = await run(saved);
    expect(relErr(c.prefill, a.prefill)).to.equal(0);
    expect(relErr(c.decode, a.decode)).to.equal(0);
    // the blocks are kept as stored (144 bytes per 256 weights), the embedding too (rows dequantized on lookup)
    const weights = cfg.layers * (2 * cfg.dim * cfg.dim + 2 * (cfg.dim / 2) * cfg.dim + 3 * cfg.dim * cfg.hidden) + cfg.vocab * cfg.dim;
    expect(bytes).to.be.below(weights * (144 / 256) + (1 << 20));
    // pruneModel / quantizeModel re-read the blocks widened to f32: from the GGUF file and from the saved one
    for (const src of [file, saved]) {
      const m2 = await loadModel(src);
      const q = await quantizeModel(m2, {});
      const err = relErr(await q.forwardAll(ids), await m2.forwardAll(ids));
      expect(err, src).to.be.below(0.05);
      q.dispose();
      m2.dispose();
    }
  });

  it('truncated files and unknown types are refused naming the tensor and the type', async () => {
    const dir = path.join(tmp, 'broken');
    const file = writeRandomModel(dir, cfg, ['gguf-q6_k'])['gguf-q6_k']!;
    const raw = fs.readFileSync(file);
    const cut = path.join(dir, 'cut.gguf');
    fs.writeFileSync(cut, raw.subarray(0, raw.length - 1000));
    let err: Error | undefined;
    try { await loadModel(cut); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/runs past the end of the file.*truncated/);
    // retype one tensor to IQ2_XXS (ggml type 16), which sparq does not read
    const g = readGguf(file);
    const tensors = [...g.tensors.values()].map((t) => ({ name: t.name, dims: t.dims, type: t.name === 'blk.1.ffn_up.weight' ? 16 : t.type, data: new Uint8Array(raw.subarray(t.offset, t.offset + t.bytes)) }));
    const odd = path.join(dir, 'odd.gguf');
    writeGguf(odd, metaOf(file), tensors);
    err = undefined;
    try { await loadModel(odd); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/blk\.1\.ffn_up\.weight is IQ2_XXS; sparq reads .*Q4_K/);
  });
});
