// One random-weight model written as llama2.c and as GGUF (F32, F16, Q8_0):
// the formats agree, the int8 paths stay within their bounds, and broken GGUF
// files are rejected with clear errors.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, saveModel, type LoadModelOptions } from '../lib/index';
import { readGguf, writeGguf } from '../lib/model/gguf';
import { f32ToF16 } from '../lib/tensor';
import { writeRandomModel, type SynthConfig } from '../lib/model/synth';
import { relErr } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-formats-'));
const cfg: SynthConfig = { dim: 64, hidden: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 400, maxSeq: 96, seed: 11 };
const ids = [1, 260, 300, 17, 45, 399, 3, 260, 100, 101, 102];

type MetaValue = Parameters<typeof writeGguf>[1][number][1];

/** Copies a GGUF file, letting edit() retype a tensor and meta() change metadata. */
function rewriteGguf(src: string, dst: string, edit: (name: string, data: Uint8Array) => { type: number; data: Uint8Array } | null,
                     meta: (key: string, v: MetaValue) => MetaValue = (_k, v) => v): string {
  const g = readGguf(src);
  const raw = fs.readFileSync(src);
  const entries = [...g.meta].map(([k, v]): [string, MetaValue] => {
    let m: MetaValue;
    if (Array.isArray(v)) m = typeof v[0] === 'string' ? { type: 'arr', elem: 'str', value: v as string[] } : k.endsWith('token_type') ? { type: 'arr', elem: 'i32', value: v as number[] } : { type: 'arr', elem: 'f32', value: v as number[] };
    else if (typeof v === 'string') m = { type: 'str', value: v };
    else m = { type: Number.isInteger(v) && !k.includes('eps') && !k.includes('freq') ? 'u32' : 'f32', value: Number(v) };
    return [k, meta(k, m)];
  });
  const tensors = [...g.tensors.values()].map((t) => {
    const data = raw.subarray(t.offset, t.offset + t.bytes);
    const e = edit(t.name, data);
    return { name: t.name, dims: t.dims, type: e ? e.type : t.type, data: e ? e.data : data };
  });
  writeGguf(dst, entries, tensors);
  return dst;
}

async function logits(file: string, opts: LoadModelOptions = {}): Promise<Float32Array> {
  const m = await loadModel(file, opts);
  try {
    return await m.forwardAll(ids);
  } finally {
    m.dispose();
  }
}

describe('model formats: llama2.c, GGUF and Hugging Face from the same random weights', function () {
  this.timeout(120000);
  let files: Record<string, string>;
  let tied: Record<string, string>;
  before(() => {
    files = writeRandomModel(path.join(tmp, 'untied'), cfg, ['llama2c', 'gguf-f32', 'gguf-f16', 'gguf-q8_0', 'hf', 'hf-bf16']);
    tied = writeRandomModel(path.join(tmp, 'tied'), { ...cfg, tied: true, seed: 12 }, ['llama2c', 'gguf-f32', 'hf']);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('llama2.c, GGUF F32 and Hugging Face F32 give the same logits and token ids (tied and untied classifier)', async () => {
    for (const set of [files, tied]) {
      const a = await logits(set.llama2c!, { tokenizer: set.tokenizer });
      expect(relErr(await logits(set['gguf-f32']!), a)).to.be.below(1e-6);
      // HF: q / k rows reordered for half-split RoPE, so only the summation order differs
      expect(relErr(await logits(set.hf!), a)).to.be.below(1e-5);
      const ma = await loadModel(set.llama2c!, { tokenizer: set.tokenizer });
      const text = 'the little friend said hello, once upon a time!';
      for (const other of [set['gguf-f32']!, set.hf!]) {
        const mb = await loadModel(other);
        const { normEps: _a, ...cb } = mb.config, { normEps: _b, ...ca } = ma.config;
        expect(cb, other).to.deep.equal(ca);
        expect(mb.tokenizer.encode(text), other).to.deep.equal(ma.tokenizer.encode(text));
        expect(mb.tokenizer.decode(mb.tokenizer.encode(text))).to.equal(text);
        mb.dispose();
      }
      ma.dispose();
    }
  });

  it('a SentencePiece tokenizer.json in the Metaspace form (newer conversions: Mistral) tokenizes as the normalizer form and as tokenizers.js', async () => {
    const dir = path.join(tmp, 'metaspace');
    fs.cpSync(files.hf!, dir, { recursive: true });
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    json.normalizer = null;
    json.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
    json.decoder = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] };
    json.post_processor = null;
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
    const a = await loadModel(files.hf!), b = await loadModel(dir);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Tokenizer } = require('@huggingface/tokenizers') as { Tokenizer: new (j: unknown, c: unknown) => { encode(t: string, o: object): { ids: number[] } } };
    // tokenizers.js takes both forms alike too (the two schemes are one; its merges-based BPE and
    // sparq's score-based one may split this synthetic vocabulary differently, so each is compared with itself)
    const ref = new Tokenizer(json, {}), refOld = new Tokenizer({ ...JSON.parse(fs.readFileSync(path.join(files.hf!, 'tokenizer.json'), 'utf8')), decoder: json.decoder, post_processor: null, pre_tokenizer: null }, {});
    try {
      for (const text of ['the little friend said hello', '  two leading spaces', 'trailing  ', 'a  b   c', 'once\nupon\ta time!', 'x', ' one']) {
        // the one difference: Metaspace adds no U+2581 in front of text that starts with a space
        // (tokenizers does the same); a normalizer's Prepend always does, as SentencePiece
        const lead = text.startsWith(' ');
        const want = a.tokenizer.encode(lead ? text.slice(1) : text, { bos: false }), got = b.tokenizer.encode(text, { bos: false });
        expect(got, JSON.stringify(text)).to.deep.equal(want);
        const hf = ref.encode(text, { add_special_tokens: false }).ids, hfOld = refOld.encode(lead ? text.slice(1) : text, { add_special_tokens: false }).ids;
        expect(hf, JSON.stringify(text)).to.deep.equal(hfOld);
      }
      // and the rule survives saveModel
      const saved = path.join(tmp, 'metaspace.sparq');
      await saveModel(b, saved);
      const c = await loadModel(saved);
      expect(c.tokenizer.encode('  two leading spaces')).to.deep.equal(b.tokenizer.encode('  two leading spaces'));
      c.dispose();
      // splitting at spaces, or another replacement, is not this scheme: refused by name
      json.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
      await loadModel(dir).then((m) => { m.dispose(); throw new Error('loaded'); }, (e: Error) => expect(e.message).to.match(/Metaspace with replacement U\+2581, split false/));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('Hugging Face BF16 within 2e-2, and int8 from BF16', async () => {
    const ref = await logits(files.llama2c!, { tokenizer: files.tokenizer });
    const b = relErr(await logits(files['hf-bf16']!), ref), bi = relErr(await logits(files['hf-bf16']!, { weights: 'int8' }), ref);
    console.log(`      relative logit error vs f32: BF16 ${b.toExponential(2)}, BF16 -> int8 ${bi.toExponential(2)}`);
    expect(b).to.be.below(2e-2);
    expect(bi).to.be.below(5e-2);
  });

  it('F16 within 5e-3, Q8_0 (int8 group 32) and weights: int8 (per channel) within 5e-2 of f32', async () => {
    const ref = await logits(files.llama2c!, { tokenizer: files.tokenizer });
    const f16 = relErr(await logits(files['gguf-f16']!), ref);
    const q8 = relErr(await logits(files['gguf-q8_0']!), ref);
    const i8 = relErr(await logits(files.llama2c!, { tokenizer: files.tokenizer, weights: 'int8' }), ref);
    const q8i8 = relErr(await logits(files['gguf-q8_0']!, { weights: 'int8' }), ref);
    console.log(`      relative logit error vs f32: F16 ${f16.toExponential(2)}, Q8_0 ${q8.toExponential(2)}, int8 per-channel ${i8.toExponential(2)}`);
    expect(f16).to.be.below(5e-3);
    expect(q8).to.be.below(5e-2);
    expect(i8).to.be.below(5e-2);
    expect(q8i8).to.equal(q8);  // Q8_0 tensors are already int8: weights: 'int8' changes nothing
  });

  it('mixed tensor types load unfused (q / gate in F16, the rest F32) and agree', async () => {
    // rewrite the F32 GGUF with attn_q and ffn_gate in F16: q|k|v and gate|up can no longer be read as one weight
    const mixed = rewriteGguf(files['gguf-f32']!, path.join(tmp, 'mixed.gguf'), (name, data) => {
      if (!/attn_q|ffn_gate/.test(name)) return null;
      const f = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
      return { type: 1, data: new Uint8Array(Uint16Array.from(f, f32ToF16).buffer) };
    });
    const ref = await logits(files.llama2c!, { tokenizer: files.tokenizer });
    expect(relErr(await logits(mixed), ref)).to.be.below(5e-3);
    expect(relErr(await logits(mixed, { weights: 'int8' }), ref)).to.be.below(5e-2);
  });

  it('f16 and int8 KV caches stay close to the f32 cache; f16 is the default', async () => {
    const ref = await logits(files.llama2c!, { tokenizer: files.tokenizer, kvCache: 'f32' });
    const byType: Record<string, Float32Array> = {};
    for (const kvCache of ['f16', 'i8'] as const) {
      byType[kvCache] = await logits(files.llama2c!, { tokenizer: files.tokenizer, kvCache });
      const e = relErr(byType[kvCache]!, ref);
      expect(e, kvCache).to.be.above(0).and.below(kvCache === 'f16' ? 2e-3 : 3e-2);
    }
    expect(Array.from(await logits(files.llama2c!, { tokenizer: files.tokenizer }))).to.deep.equal(Array.from(byType.f16!));
  });

  it('rejects broken and unsupported GGUF files and Hugging Face folders clearly', async () => {
    const good = fs.readFileSync(files['gguf-f32']!);
    const put = (name: string, b: Uint8Array) => { const p = path.join(tmp, name); fs.writeFileSync(p, b); return p; };
    const arch = path.join(tmp, 'gpt2.gguf');
    writeGguf(arch, [['general.architecture', { type: 'str', value: 'gpt2' }]], []);
    const q4 = path.join(tmp, 'q4.gguf');
    writeGguf(q4, [['general.architecture', { type: 'str', value: 'llama' }]], [{ name: 'x', dims: [32, 2], type: 2, data: new Uint8Array(36) }]);
    const badBos = rewriteGguf(files['gguf-f32']!, path.join(tmp, 'bos.gguf'), () => null,
      (k, v) => (k === 'tokenizer.ggml.bos_token_id' ? { type: 'u32', value: 9999 } : v));
    const cases: [string, RegExp][] = [
      [badBos, /bos_token_id = 9999 is outside the vocabulary/],
      [put('trunc.gguf', good.subarray(0, good.length - 1000)), /runs past the end of the file|truncated/],
      [put('head.gguf', good.subarray(0, 30)), /unexpected end of file|truncated/],
      [put('ver.gguf', (() => { const b = Buffer.from(good); b.writeUInt32LE(99, 4); return b; })()), /version 99/],
      [put('count.gguf', (() => { const b = Buffer.from(good); b.writeBigUInt64LE(2n ** 40n, 16); return b; })()), /metadata entries|absurd/],
      [arch, /architecture 'gpt2' is not supported/],
      [q4, /metadata llama\.embedding_length is missing|Q4_0/],
    ];
    // Hugging Face folders
    const hf = (name: string, edit: (d: string) => void) => {
      const d = path.join(tmp, name);
      fs.cpSync(files.hf!, d, { recursive: true });
      edit(d);
      return d;
    };
    const st = path.join(files.hf!, 'model.safetensors');
    cases.push(
      [hf('hf-noconfig', (d) => fs.rmSync(path.join(d, 'config.json'))), /has no config\.json/],
      [hf('hf-arch', (d) => fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }))), /architecture 'GPT2LMHeadModel' is not supported/],
      [hf('hf-trunc', (d) => fs.writeFileSync(path.join(d, 'model.safetensors'), fs.readFileSync(st).subarray(0, 5000))), /do not match its shape or the file|header length/],
      [hf('hf-json', (d) => { const b = fs.readFileSync(st); b.write('!!', 8); fs.writeFileSync(path.join(d, 'model.safetensors'), b); }), /header is not JSON/],
      [hf('hf-notok', (d) => fs.rmSync(path.join(d, 'tokenizer.json'))), /has no tokenizer\.json/],
      [hf('hf-vocab', (d) => {
        const t = JSON.parse(fs.readFileSync(path.join(d, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
        t.model.vocab['\u2581extra'] = 5000;
        fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify(t));
      }), /token id 5000 is outside the model's vocabulary \(400\)/],
    );
    for (const [p, re] of cases) {
      let err: Error | undefined;
      try { (await loadModel(p)).dispose(); } catch (e) { err = e as Error; }
      expect(err?.message, p).to.match(re);
    }
  });
});
