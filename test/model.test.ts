// The model loop on the real stories260K checkpoint (../shared/models) against
// the reference outputs of llama2.c's run.c, plus the loader's error paths.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Tokenizer, loadModel, type Model } from '../lib/index';
import { Sampler } from '../lib/model/sampler';
import { STORIES_DIR as DIR, STORIES_MODEL as MODEL, STORIES_TOK as TOK, needStories } from './helpers';

interface Entry { prompt: string; prompt_token_ids: number[]; generated_token_ids: number[]; n_generated: number; stopped_on_bos: boolean; text: string }
interface Reference { entries: Entry[]; logits: { prompt: string; pos0_after_BOS: number[] } }

async function collect(m: Model, prompt: string | number[], opts: Parameters<Model['generate']>[1]): Promise<{ ids: number[]; text: string }> {
  const ids: number[] = [];
  let text = '';
  for await (const t of m.generate(prompt, opts)) {
    ids.push(t.id);
    text += t.text;
  }
  return { ids, text };
}

describe('model: stories260K against llama2.c run.c', function () {
  this.timeout(120000);
  let ref: Reference;
  let f32: Model, int8: Model;

  before(async function () {
    needStories(this);
    ref = JSON.parse(fs.readFileSync(path.join(DIR, 'reference.json'), 'utf8')) as Reference;
    // an f32 KV cache: run.c keeps one, and these compare logits with it at 1e-4
    f32 = await loadModel(MODEL, { tokenizer: TOK, kvCache: 'f32' });
    int8 = await loadModel(MODEL, { tokenizer: TOK, weights: 'int8', kvCache: 'f32' });
  });
  after(() => {
    f32?.dispose();
    int8?.dispose();
  });

  it('reads the config', () => {
    expect(f32.config).to.deep.equal({ arch: 'llama', dim: 64, hidden: 172, layers: 5, heads: 8, kvHeads: 4, headDim: 8, vocab: 512, maxSeq: 512,
      ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true });
  });

  it('encodes every reference prompt to the reference token ids, and decodes them back', () => {
    for (const e of ref.entries) {
      expect(f32.tokenizer.encode(e.prompt), e.prompt).to.deep.equal(e.prompt_token_ids);
      expect(f32.tokenizer.decode(e.prompt_token_ids)).to.equal(e.prompt.length ? e.prompt : '');
    }
  });

  it('first-step logits within 1e-4 of run.c (f32 weights)', async () => {
    f32.reset();
    const logits = await f32.forward([1]);
    let err = 0;
    ref.logits.pos0_after_BOS.forEach((v, i) => { err = Math.max(err, Math.abs(v - logits[i]!)); });
    console.log(`      max |logit - run.c| = ${err.toExponential(2)}`);
    expect(err).to.be.below(1e-4);
  });

  it('greedy generation reproduces the reference ids and text for every prompt (f32)', async () => {
    for (const e of ref.entries) {
      const { ids, text } = await collect(f32, e.prompt, { maxTokens: e.n_generated, temperature: 0 });
      expect(ids, e.prompt).to.deep.equal(e.generated_token_ids);
      expect(f32.tokenizer.decode(e.prompt_token_ids) + text, e.prompt).to.equal(e.text);
    }
    // the empty prompt, 256 steps: the sample published with the model
    const doc = (ref as unknown as { doc_check: { text: string; generated_token_ids: number[] } }).doc_check;
    const { ids, text } = await collect(f32, '', { maxTokens: 256 });
    expect(ids).to.deep.equal(doc.generated_token_ids);
    expect(text).to.equal(doc.text);
  });

  it('int8 weights: greedy text stays close (agreement recorded)', async () => {
    let same = 0, total = 0;
    for (const e of ref.entries) {
      const { ids } = await collect(int8, e.prompt_token_ids, { maxTokens: e.n_generated });
      // agreement up to the first divergence (after it the contexts differ)
      let k = 0;
      while (k < ids.length && ids[k] === e.generated_token_ids[k]) k++;
      same += k;
      total += e.generated_token_ids.length;
    }
    console.log(`      int8: ${same}/${total} greedy tokens agree with f32 run.c before the first divergence`);
    expect(same / total).to.be.above(0.3);
  });

  it('ids are used as given, forward appends, continue extends, stop strings and maxTokens end generation', async () => {
    const e = ref.entries[0]!;
    const a = await collect(f32, e.prompt_token_ids, { maxTokens: 5 });
    expect(a.ids).to.deep.equal(e.generated_token_ids.slice(0, 5));
    expect(f32.length).to.equal(e.prompt_token_ids.length + 4);
    const b = await collect(f32, [e.generated_token_ids[4]!], { maxTokens: 3, continue: true });
    expect(b.ids).to.deep.equal(e.generated_token_ids.slice(5, 8));
    expect(f32.stats.promptTokens).to.equal(1);
    expect(f32.stats.generatedTokens).to.equal(3);
    expect(f32.stats.decodeTokensPerSec).to.be.above(0);
    const full = (await collect(f32, e.prompt, { maxTokens: 40 })).text;
    const cut = full.indexOf('Lily');
    const s = await collect(f32, e.prompt, { maxTokens: 40, stop: ['Lily'] });
    expect(s.text).to.equal(full.slice(0, cut));
    // text held back as a possible stop-string prefix is not lost when generation ends
    const tail = full.slice(-2);
    const h = await collect(f32, e.prompt, { maxTokens: 40, stop: [tail + 'zzz'] });
    expect(h.text).to.equal(full);
    // a stop string of two tokens' text: the first is held back, the second completes it and
    // adds no text of its own; both are yielded (every generated token is, once)
    const pieces: { id: number; text: string }[] = [];
    for await (const t of f32.generate(e.prompt, { maxTokens: 40 })) pieces.push(t);
    let at = -1, start = 0;
    for (let i = 2, before = pieces[0]!.text.length + pieces[1]!.text.length; i + 1 < pieces.length; before += pieces[i]!.text.length, i++) {
      const two = pieces[i]!.text + pieces[i + 1]!.text;
      if (pieces[i]!.text && pieces[i + 1]!.text && full.indexOf(two) === before) {
        at = i;
        start = before;
        break;
      }
    }
    expect(at, 'two tokens whose text first appears where they stand').to.be.above(0);
    const two = await collect(f32, e.prompt, { maxTokens: 40, stop: [pieces[at]!.text + pieces[at + 1]!.text] });
    expect(two.ids).to.deep.equal(pieces.slice(0, at + 2).map((p) => p.id));
    expect(two.text).to.equal(full.slice(0, start));
  });

  it('the native forward fills and returns a given logits buffer (generate reuses one per loop), and refuses a wrong one', async () => {
    const e = ref.entries[0]!;
    type Fwd = { forward(t: Int32Array, all: boolean, out?: Float32Array): Promise<Float32Array> };
    const nat = (f32 as unknown as { live(op: string): Fwd }).live('forward');
    f32.reset();
    const fresh = await f32.forward(e.prompt_token_ids);
    f32.reset();
    const buf = new Float32Array(f32.config.vocab).fill(Number.NaN);
    const got = await nat.forward(Int32Array.from(e.prompt_token_ids), false, buf);
    expect(got).to.equal(buf);
    expect(Array.from(buf)).to.deep.equal(Array.from(fresh));
    expect(() => nat.forward(Int32Array.from([1]), false, new Float32Array(3))).to.throw(RangeError, /out holds 3 floats/);
    expect(await nat.forward(Int32Array.from([1]), true, buf)).to.equal(buf);  // all logits of one token: the same length
    expect(() => nat.forward(Int32Array.from([1, 2]), true, buf)).to.throw(RangeError, /the logits are/);
    expect(() => nat.forward(Int32Array.from([1]), false, new Float64Array(f32.config.vocab) as unknown as Float32Array)).to.throw(TypeError, /out must be a Float32Array/);
    f32.reset();
  });

  it('seeded sampling is reproducible; top-k 1 is greedy', async () => {
    const x = await collect(f32, 'Once upon a time', { maxTokens: 20, temperature: 0.9, topP: 0.9, seed: 7 });
    const y = await collect(f32, 'Once upon a time', { maxTokens: 20, temperature: 0.9, topP: 0.9, seed: 7 });
    expect(x.ids).to.deep.equal(y.ids);
    const g = await collect(f32, 'Once upon a time', { maxTokens: 20, temperature: 1.5, topK: 1, seed: 3 });
    expect(g.ids).to.deep.equal(ref.entries[0]!.generated_token_ids.slice(0, 20));
  });

  it('AbortSignal cancels', async () => {
    const ac = new AbortController();
    const got: number[] = [];
    let err: Error | undefined;
    try {
      for await (const t of f32.generate('Once upon a time', { maxTokens: 100, signal: ac.signal })) {
        got.push(t.id);
        if (got.length === 3) ac.abort();
      }
    } catch (e) {
      err = e as Error;
    }
    expect(got.length).to.equal(3);
    expect(err?.name).to.equal('AbortError');
  });

  it('bad input: out-of-range ids, prompts past maxSeq, bad options, use after dispose', async () => {
    const small = await loadModel(MODEL, { tokenizer: TOK, maxSeq: 8 });
    const fails: [() => Promise<unknown>, RegExp][] = [
      [() => small.forward([1, 512]), /token id 512 at index 1 is outside \[0, 512\)/],
      [() => small.forward([-1]), /token id -1/],
      [() => collect(small, 'Once upon a time there was a very long prompt', {}), /does not fit maxSeq 8/],
      [() => collect(small, 'hi', { temperature: -1 }), /temperature must be/],
      [() => collect(small, 'hi', { topP: 0 }), /topP must be in/],
      [() => collect(small, 'hi', null as never), /generate: options must be an object; got null/],
      [() => collect(small, 'hi', { signal: {} as never }), /generate: signal must be an AbortSignal/],
      [async () => { small.reset(); await small.forward([1, 2, 3, 4, 5, 6, 7]); await small.forward([1, 2]); }, /context is full/],
    ];
    for (const [f, re] of fails) {
      let err: Error | undefined;
      try { await f(); } catch (e) { err = e as Error; }
      expect(err?.message, String(re)).to.match(re);
    }
    small.dispose();
    let err: Error | undefined;
    try { await small.forward([1]); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/disposed/);
  });
});

describe('tokenizer: BPE merges', () => {
  // run.c's loop: merge the best-scoring adjacent pair (leftmost on ties) until none merges - O(n^2)
  function naive(tok: Tokenizer, text: string): number[] {
    const t = tok as unknown as { lookup: Map<string, number>; keys: string[]; scores: Float32Array };
    const toks = tok.encode(text, { bos: false }).flatMap((id) => [...t.keys[id]!].map((ch) => {
      const one = t.lookup.get(ch);
      if (one === undefined) throw new Error('test tokenizers hold every byte');
      return one;
    }));
    for (;;) {
      let best = -Infinity, bestId = -1, bestAt = -1;
      for (let i = 0; i + 1 < toks.length; i++) {
        const id = t.lookup.get(t.keys[toks[i]!]! + t.keys[toks[i + 1]!]!);
        if (id !== undefined && t.scores[id]! > best) { best = t.scores[id]!; bestId = id; bestAt = i; }
      }
      if (bestAt < 0) return toks;
      toks.splice(bestAt, 2, bestId);
    }
  }
  // a vocabulary of single bytes 'a'..'e' and ' ', and every pair / some triples with few distinct scores (many ties)
  function tiny(seed: number): Tokenizer {
    let s = seed;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const chars = ['<s>', '</s>', ' ', 'a', 'b', 'c', 'd', 'e'];
    const pieces = [...chars];
    for (const x of chars.slice(2)) for (const y of chars.slice(2)) if (rnd() < 0.6) pieces.push(x + y);
    for (let i = 0; i < 40; i++) pieces.push(pieces[2 + Math.floor(rnd() * (pieces.length - 2))]! + chars[2 + Math.floor(rnd() * 6)]!);
    const uniq = [...new Set(pieces)];
    return new Tokenizer({ pieces: uniq.map((p) => new TextEncoder().encode(p)), scores: uniq.map((_, i) => (i < chars.length ? 0 : Math.floor(rnd() * 3))), bos: 0, eos: 1, addSpacePrefix: false });
  }

  it('equals run.c\'s quadratic merge loop on random text, ties included', () => {
    let s = 7;
    const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let v = 0; v < 20; v++) {
      const tok = tiny(v + 1);
      for (let r = 0; r < 20; r++) {
        const text = Array.from({ length: 1 + Math.floor(rnd() * 120) }, () => ' abcde'[Math.floor(rnd() * 6)]).join('');
        expect(tok.encode(text, { bos: false }), `vocab ${v} text '${text}'`).to.deep.equal(naive(tok, text));
      }
    }
  });

  it('a 200,000-character text encodes and decodes back (stories260K tokenizer)', function () {
    needStories(this);
    const tok = Tokenizer.fromLlama2c(fs.readFileSync(TOK), 512);
    const text = 'Once upon a time, there was a little girl named Lily. She liked to play outside. '.repeat(2500);
    const ids = tok.encode(text);
    expect(ids.length).to.be.above(20000);
    expect(tok.decode(ids)).to.equal(text);
    expect(tok.encode(text.slice(0, 3000))).to.deep.equal([1, ...naive(tok, text.slice(0, 3000))]);
  });

  it('pieces given packed (one buffer + offsets, as the GGUF loader builds them) tokenize as pieces given one by one', function () {
    needStories(this);
    const a = Tokenizer.fromLlama2c(fs.readFileSync(TOK), 512), spec = a.toSpec();
    const text = 'Once upon a time, Lily saw a big red ball. "Wow!" she said. ÆØÅ 東京 😀\n';
    // packPieces by hand: the bytes in a larger buffer at an offset, so views are honoured
    const total = spec.pieces.reduce((n, p) => n + p.length, 0), backing = new Uint8Array(total + 5), offsets = new Uint32Array(spec.pieces.length + 1);
    spec.pieces.forEach((p, i) => { backing.set(p, 3 + offsets[i]!); offsets[i + 1] = offsets[i]! + p.length; });
    const b = new Tokenizer({ ...spec, pieces: { bytes: backing.subarray(3, 3 + total), offsets } });
    expect(b.vocabSize).to.equal(a.vocabSize);
    expect(b.encode(text)).to.deep.equal(a.encode(text));
    const ids = Array.from({ length: 512 }, (_, i) => i);
    expect(b.decode(ids)).to.equal(a.decode(ids));
    expect(b.toSpec().pieces).to.deep.equal(spec.pieces);
    // offsets that do not fit the bytes, or go backwards, are refused
    expect(() => new Tokenizer({ ...spec, pieces: { bytes: new Uint8Array(4), offsets: Uint32Array.of(0, 2, 9) } })).to.throw(RangeError, /offsets/);
    expect(() => new Tokenizer({ ...spec, pieces: { bytes: new Uint8Array(4), offsets: Uint32Array.of(0, 3, 1) } })).to.throw(RangeError, /offsets/);
    expect(() => new Tokenizer({ ...spec, pieces: { bytes: new Uint8Array(4), offsets: Uint32Array.of(1, 3) } })).to.throw(RangeError, /offsets/);
  });
});

describe('model: loader errors', function () {
  this.timeout(60000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-model-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('truncated, corrupted and unknown files give clear errors', async function () {
    needStories(this);
    const bytes = fs.readFileSync(MODEL);
    const write = (name: string, b: Uint8Array) => { const p = path.join(tmp, name); fs.writeFileSync(p, b); return p; };
    const cases: [string, RegExp][] = [
      [write('trunc.bin', bytes.subarray(0, 100000)), /need \d+ bytes but the file has 100000/],
      [write('short.bin', bytes.subarray(0, 10)), /too short/],
      [write('hdr.bin', (() => { const b = Buffer.from(bytes); b.writeInt32LE(7, 12); return b; })()), /heads is not a multiple of kvHeads|not a multiple/],
      [write('huge.bin', (() => { const b = Buffer.from(bytes); b.writeInt32LE(1 << 30, 0); return b; })()), /out of range/],
      [write('gguf.bin', Buffer.from('GGUF\x03\x00\x00\x00')), /not a valid GGUF file: unexpected end of file/],
    ];
    for (const [p, re] of cases) {
      let err: Error | undefined;
      try { (await loadModel(p, { tokenizer: TOK })).dispose(); } catch (e) { err = e as Error; }
      expect(err?.message, p).to.match(re);
    }
    let err: Error | undefined;
    try { await loadModel(MODEL); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/need a tokenizer/);
    const tokBytes = fs.readFileSync(TOK);
    expect(() => Tokenizer.fromLlama2c(tokBytes.subarray(0, 300), 512)).to.throw(/truncated/);
  });

  it('FIFOs and devices (which block or never end) are refused before they are opened, as model or tokenizer', async function () {
    needStories(this);
    const fifo = path.join(tmp, 'fifo');
    spawnSync('mkfifo', [fifo]);
    const cases: [string, string | undefined, RegExp][] = [
      ['/dev/zero', undefined, /\/dev\/zero is not a regular file \(a character device\)/],
      [MODEL, '/dev/urandom', /\/dev\/urandom is not a regular file/],
    ];
    if (fs.existsSync(fifo)) cases.push([fifo, undefined, /is not a regular file \(a FIFO\)/], [MODEL, fifo, /is not a regular file \(a FIFO\)/]);
    for (const [file, tokenizer, re] of cases) {
      let err: Error | undefined;
      try { (await loadModel(file, tokenizer ? { tokenizer } : {})).dispose(); } catch (e) { err = e as Error; }
      expect(err, `${file} ${tokenizer}`).to.be.instanceOf(TypeError);
      expect(err!.message).to.match(re);
    }
  });
});

describe('sampler', () => {
  const draw = (logits: number[], opts: ConstructorParameters<typeof Sampler>[0], n = 4000) => {
    const s = new Sampler({ seed: 9, ...opts });
    const counts = new Array<number>(logits.length).fill(0);
    const l = Float32Array.from(logits);
    for (let i = 0; i < n; i++) counts[s.sample(l)]!++;
    return counts.map((c) => c / n);
  };

  it('NaN or +Infinity logits are an error, greedy or sampled (never an arbitrary token)', () => {
    for (const bad of [NaN, Infinity])
      for (const opts of [{}, { temperature: 1 }, { temperature: 0.8, topK: 2 }, { temperature: 1, topP: 0.5 }]) {
        const l = Float32Array.from([1, 2, 3, 4]);
        l[2] = bad;
        expect(() => new Sampler(opts).sample(l), `${bad} ${JSON.stringify(opts)}`).to.throw(RangeError, /logits are not finite \(token 2/);
      }
    expect(new Sampler({ temperature: 1 }).sample(Float32Array.from([-Infinity, 0, -Infinity]))).to.equal(1);
  });

  it('greedy takes the lowest id among ties; top-k keeps the k best (ties to the lower id)', () => {
    expect(new Sampler({}).sample(Float32Array.from([-3, 2, 5, 5, 1]))).to.equal(2);
    const f = draw([-1, 3, 3, 3, -2], { temperature: 1, topK: 2 });
    expect(f[1]! + f[2]!).to.equal(1);
    expect(f[1]!).to.be.closeTo(0.5, 0.05);
  });

  it('top-p keeps the smallest most-likely set reaching p, with the temperature applied first', () => {
    // probabilities 0.5, 0.3, 0.2 (negative and positive logits)
    const logits = [Math.log(0.3), Math.log(0.5), Math.log(0.2)].map((x) => x + 1.5);
    const f = draw(logits, { temperature: 1, topP: 0.6 });
    expect(f[2]).to.equal(0);
    expect(f[1]!).to.be.closeTo(0.5 / 0.8, 0.03);
    const all = draw(logits, { temperature: 1 });
    expect(all[2]!).to.be.closeTo(0.2, 0.03);
  });
});
