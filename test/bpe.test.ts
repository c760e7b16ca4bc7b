// Byte-level BPE (Llama 3, Qwen 2.5): ids identical to Hugging Face's
// tokenizers.js on real vocabularies over awkward text, the same vocabulary
// read from GGUF metadata and from tokenizer.json, and a random-weight model
// with that vocabulary giving the same ids and logits in both forms.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, saveModel } from '../lib/index';
import { byteLevelTokenizer } from '../lib/model/hf';
import { PRE_TOKENIZERS, preTokenizerRegex } from '../lib/model/bpe';
import { writeRandomModel } from '../lib/model/synth';
import { writeGgufModel } from '../lib/model/gguf_write';
import { llamaCppOrSkip } from './helpers';

// real tokenizer.json files, shipped in npm packages (devDependencies)
const MODULES = path.join(__dirname, '..', 'node_modules');
const VOCABS: Record<string, string> = {
  llama3: path.join(MODULES, '@lenml', 'tokenizer-llama3'),
  'qwen2.5': path.join(MODULES, '@lenml', 'tokenizer-qwen2_5'),
  // SmolLM's pre-tokenizer (every digit isolated, then ByteLevel's GPT-2 regex; llama.cpp: 'smollm')
  // over the Llama 3 vocabulary: the split is what is tested
  'smollm-style': smollmStyle(path.join(MODULES, '@lenml', 'tokenizer-llama3')),
};

function smollmStyle(from: string): string {
  const dir = path.join(os.tmpdir(), `sparq-smollm-style-${process.pid}`), models = path.join(dir, 'models');
  fs.mkdirSync(models, { recursive: true });
  const json = JSON.parse(fs.readFileSync(path.join(from, 'models', 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  json.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] };
  fs.writeFileSync(path.join(models, 'tokenizer.json'), JSON.stringify(json));
  fs.copyFileSync(path.join(from, 'models', 'tokenizer_config.json'), path.join(models, 'tokenizer_config.json'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// awkward text: contractions in any case, digit runs, whitespace runs and tabs,
// leading / trailing spaces, CR LF, CJK, emoji with ZWJ and variation
// selectors, accents (composed and not), Arabic, code, URLs, special tokens
const CORPUS = [
  'Hello world', ' Hello  world ', "I'm you're HE'LL we've THEY'D it's O'Neil's", "'''s 's 'S",
  '12345678901 3.14159 1,000,000 2024-12-06 0x1F', 'a1b22c333d4444', 'tabs\tand\t\tspaces   \n\nnewlines\r\n\r\nend ',
  '   leading', 'trailing   ', ' ', '  ', '\n', '\n\n\n', '\t', '', '日本語のテキストと中文文本，标点。', '한국어 텍스트',
  'emoji 👨‍👩‍👧‍👦 and 🏳️‍🌈 ok 👍🏽', 'café naïve résumé', 'cafe\u0301 composed later', 'مرحبا بالعالم', 'שלום', 'Ωmega ÅSTRÖM ß',
  'def f(x):\n    return x**2  # comment\n', 'if (a && b) { return c->d[0]; } // done', 'https://example.com/path?q=1&r=2#frag',
  '<|begin_of_text|>Hi<|eot_id|>', '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n', '<|not_a_token|>',
  'call <tool_call>{"name": "f"}</tool_call> done',
  'a\u00a0b\u2003c\u3000d', 'v1.2.3 x86_64 ١٢٣ ⅣⅫ ½ ²³ a  1  22 b\t3', ' 2024 ', '10 000 000', 'x'.repeat(300), '!!!???...---', '$100 & 50% off @user #tag', 'lone \ud800 surrogate',
];

function reference(dir: string): { hf: { encode(t: string, o: object): { ids: number[] } }; json: Record<string, unknown>; config: Record<string, unknown> } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Tokenizer } = require('@huggingface/tokenizers') as { Tokenizer: new (j: unknown, c: unknown) => { encode(t: string, o: object): { ids: number[] } } };
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'models', 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'models', 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  return { hf: new Tokenizer(json, config), json, config };
}

function vocabSize(json: Record<string, unknown>): number {
  let n = 0;
  for (const id of Object.values((json.model as { vocab: Record<string, number> }).vocab)) n = Math.max(n, id + 1);
  for (const a of json.added_tokens as { id: number }[]) n = Math.max(n, a.id + 1);
  return n;
}

describe('tokenizer: byte-level BPE against Hugging Face tokenizers.js', function () {
  this.timeout(120000);

  for (const [name, dir] of Object.entries(VOCABS)) {
    it(`${name}: ids identical over an awkward corpus (special tokens parsed), and decode restores the text`, () => {
      const { hf, json, config } = reference(dir);
      const tok = byteLevelTokenizer(json, name, vocabSize(json), 0, 0, config);
      expect(tok.kind).to.equal('bpe');
      const nfc = (t: string) => (tok.toSpec().nfc ? t.normalize('NFC') : t);
      for (const text of CORPUS) {
        // tokenizers.js's Digits isolates ASCII digits only; the Rust tokenizers (char::is_numeric) and
        // llama.cpp (\p{N}) take every Unicode number, as sparq does: checked against llama.cpp below
        if (name === 'smollm-style' && /[^\P{N}0-9]/u.test(text)) continue;
        const want = hf.encode(text, { add_special_tokens: false }).ids;
        const got = tok.encode(text, { bos: false, special: true });
        expect(got, JSON.stringify(text)).to.deep.equal(want);
        // decode: the text back (Qwen's normalizer: NFC)
        expect(tok.decode(got), JSON.stringify(text)).to.equal(nfc(Buffer.from(text, 'utf8').toString('utf8')));  // lone surrogates as U+FFFD
      }
    });

    it(`${name}: special-token text is plain text unless asked, and BOS follows the tokenizer's own config`, () => {
      const { json, config } = reference(dir);
      const tok = byteLevelTokenizer(json, name, vocabSize(json), 0, 0, config);
      const marker = name === 'qwen2.5' ? '<|im_end|>' : '<|eot_id|>';
      const id = (json.added_tokens as { id: number; content: string }[]).find((a) => a.content === marker)!.id;
      expect(tok.encode(`a${marker}b`, { bos: false, special: true })).to.include(id);
      const plain = tok.encode(`a${marker}b`, { bos: false });
      expect(plain).to.not.include(id);
      expect(tok.decode(plain)).to.equal(`a${marker}b`);
      expect(tok.toSpec().addBos).to.equal(name !== 'qwen2.5');  // Llama 3 names a BOS token; Qwen names none
      // added tokens that are not special (Qwen's <tool_call>) are cut out of any text, as tokenizers does
      if (name === 'qwen2.5') {
        const tc = (json.added_tokens as { id: number; content: string }[]).find((a) => a.content === '<tool_call>')!.id;
        expect(tok.isUserDefined(tc)).to.equal(true);
        expect(tok.encode('x<tool_call>y', { bos: false })).to.include(tc);
      }
    });

    it(`${name}: encodes at >= 1 M characters / s on one core (measured, reported)`, () => {
      const { json, config } = reference(dir);
      const tok = byteLevelTokenizer(json, name, vocabSize(json), 0, 0, config);
      const text = (CORPUS.join('\n') + fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')).repeat(8);
      const t0 = performance.now();
      const ids = tok.encode(text, { bos: false });
      const s = (performance.now() - t0) / 1000;
      console.log(`      (${name}: ${text.length} characters -> ${ids.length} tokens in ${(s * 1e3).toFixed(0)} ms: ${(text.length / s / 1e6).toFixed(1)} M characters/s, cold cache)`);
      expect(ids.length).to.be.greaterThan(text.length / 8);
    });
  }

  it('pre-tokenizer names: the llama.cpp ones compile, an unknown one is a clear error', () => {
    for (const n of Object.keys(PRE_TOKENIZERS)) expect(preTokenizerRegex(n)).to.be.instanceOf(RegExp);
    expect(() => preTokenizerRegex('no-such-pre')).to.throw(RangeError, /pre-tokenizer 'no-such-pre' is not supported/);
  });
});

describe('model: a Llama 3 vocabulary in GGUF and Hugging Face form', function () {
  this.timeout(300000);
  let dir = '';
  let files: Record<string, string> = {};
  const tj = path.join(VOCABS.llama3!, 'models', 'tokenizer.json');

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-bpe-'));
    files = writeRandomModel(dir, { dim: 64, hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 128256, maxSeq: 128, tied: true, tokenizerJson: tj }, ['gguf-f32', 'hf']);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('loads from both, tokenizes identically, and gives the same logits and greedy ids', async () => {
    const g = await loadModel(files['gguf-f32']!), h = await loadModel(files.hf!);
    try {
      const text = "Hello, world! I'm testing 12345 tokens 日本語 👨‍👩‍👧<|eot_id|>";
      const ids = g.tokenizer.encode(text, { special: true });
      expect(ids[0]).to.equal(128000);  // <|begin_of_text|>
      expect(ids).to.include(128009);   // <|eot_id|>
      expect(h.tokenizer.encode(text, { special: true })).to.deep.equal(ids);
      const lg = await g.forward(ids), lh = await h.forward(ids);
      let err = 0;
      lg.forEach((v, i) => { err = Math.max(err, Math.abs(v - lh[i]!)); });
      expect(err).to.be.lessThan(1e-4);
      const greedy = async (m: typeof g) => { const out: number[] = []; for await (const t of m.generate(ids, { maxTokens: 8, temperature: 0 })) out.push(t.id); return out; };
      expect(await greedy(h)).to.deep.equal(await greedy(g));
    } finally {
      g.dispose();
      h.dispose();
    }
  });

  it('saveModel keeps the byte-level vocabulary: the sparq file tokenizes and decodes the same', async () => {
    const h = await loadModel(files.hf!);
    const out = path.join(dir, 'saved.sparq');
    try {
      await saveModel(h, out);
      const r = await loadModel(out);
      try {
        expect(r.tokenizer.kind).to.equal('bpe');
        for (const text of CORPUS) {
          const ids = h.tokenizer.encode(text, { special: true });
          expect(r.tokenizer.encode(text, { special: true }), JSON.stringify(text)).to.deep.equal(ids);
          expect(r.tokenizer.decode(ids)).to.equal(h.tokenizer.decode(ids));
        }
      } finally {
        r.dispose();
      }
    } finally {
      h.dispose();
    }
  });

  it('writes GGUF again (sparq compress) with the byte-level vocabulary, and reads it back the same', async () => {
    const g = await loadModel(files['gguf-f32']!);
    const out = path.join(dir, 'again-q8_0.gguf');
    try {
      await writeGgufModel(g, out, 'q8_0');
      const r = await loadModel(out);
      try {
        expect(r.tokenizer.kind).to.equal('bpe');
        for (const text of CORPUS) expect(r.tokenizer.encode(text, { special: true }), JSON.stringify(text)).to.deep.equal(g.tokenizer.encode(text, { special: true }));
        expect(r.stopIds).to.deep.equal(g.stopIds);
      } finally {
        r.dispose();
      }
    } finally {
      g.dispose();
    }
  });
});

describe('tokenizer: byte-level BPE against llama.cpp (node-llama-cpp)', function () {
  this.timeout(300000);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let llama: any;
  let dir = '';
  before(async function () {
    llama = await llamaCppOrSkip(this);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-bpe-lc-'));
  });
  after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  for (const [name, vocab] of [['llama3', 128256], ['qwen2.5', 151665], ['smollm-style', 128256]] as const) {
    it(`${name}: a GGUF sparq wrote tokenizes in llama.cpp to the ids sparq gives (special tokens parsed or not)`, async () => {
      const tj = path.join(VOCABS[name]!, 'models', 'tokenizer.json');
      const file = writeRandomModel(path.join(dir, name), { dim: 64, hidden: 128, layers: 1, heads: 4, kvHeads: 2, vocab, maxSeq: 64, tied: true, tokenizerJson: tj }, ['gguf-f32'])['gguf-f32']!;
      const lm = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
      const ours = await loadModel(file);
      try {
        for (const text of CORPUS) {
          if (text.includes('\ud800')) continue;  // a lone surrogate: node-llama-cpp passes the string on as UTF-8 its own way
          expect(ours.tokenizer.encode(text, { bos: false, special: true }), JSON.stringify(text)).to.deep.equal(Array.from(lm.tokenize(text, true) as number[]));
          // special-token parsing off: control tokens are text, user-defined ones still tokens
          expect(ours.tokenizer.encode(text, { bos: false }), `${JSON.stringify(text)}, special off`).to.deep.equal(Array.from(lm.tokenize(text, false) as number[]));
        }
      } finally {
        ours.dispose();
        await lm.dispose();
      }
    });
  }
});
