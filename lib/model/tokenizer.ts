// tokenizer.ts - SentencePiece-style BPE with scores, as llama2.c's run.c and
// llama.cpp's SPM tokenizer apply it: a dummy-prefix space, UTF-8 code points
// looked up whole, unknown ones spelled as byte tokens <0xXX>, then repeated
// merges of the adjacent pair whose merged piece scores highest (leftmost on
// ties); or byte-level BPE with merge ranks (bpe.ts: Llama 3, Qwen). Pieces
// are byte strings; decode() reassembles UTF-8 across tokens.
import { ByteBpe, preSplitsDigits, preTokenizerRegex, spell, spelledBytes } from './bpe';

// one digit, kept as its own part by String.split
const DIGIT = /(\p{N})/u;
import { mergePairs } from './merge';

export interface EncodeOptions {
  /** prepend the BOS token (default true) */
  bos?: boolean;
  /** append the EOS token (default false) */
  eos?: boolean;
  /**
   * byte-level BPE: the text of a special token (`<|begin_of_text|>`, `<|im_start|>`...) is
   * that token, as chat templates need; otherwise it is plain text (default false)
   */
  special?: boolean;
}

/** All pieces' bytes back to back: piece i is bytes[offsets[i], offsets[i + 1]). */
export interface PackedPieces {
  bytes: Uint8Array;
  offsets: Uint32Array;
}

export interface TokenizerSpec {
  /** one byte string per token, or all of them packed (one allocation for a whole vocabulary) */
  pieces: Uint8Array[] | PackedPieces;
  scores: Float32Array | number[];
  bos: number;
  eos: number;
  /** add ' ' in front of non-empty text before BPE (SentencePiece add_dummy_prefix; default true) */
  addSpacePrefix?: boolean;
  /** with addSpacePrefix: none when the text already starts with a space (tokenizer.json's Metaspace pre-tokenizer, prepend_scheme 'first') */
  prefixUnlessSpace?: boolean;
  /** 'spm': SentencePiece-style, by scores (default); 'bpe': byte-level BPE, by merge ranks */
  kind?: 'spm' | 'bpe';
  /** bpe: merges as "a b" in the byte-level spelling (bpe.ts), best first */
  merges?: string[];
  /** bpe: the pre-tokenizer, a llama.cpp `tokenizer.ggml.pre` name or a tokenizer.json Split regex */
  pre?: string;
  /** bpe: a pre-tokenized piece that is a whole token is that token (tokenizer.json `ignore_merges`: Llama 3) */
  ignoreMerges?: boolean;
  /** bpe: NFC-normalize text first (Qwen's tokenizer.json) */
  nfc?: boolean;
  /** bpe: ids of the special tokens (control and added ones), whose pieces are their text */
  special?: number[];
  /** bpe: the special tokens that are cut out of any text, not only when encode asks (GGUF user-defined, tokenizer.json added tokens that are not special) */
  userDefined?: number[];
  /** bpe: BOS is prepended by default (Llama 3: yes; Qwen: no) */
  addBos?: boolean;
  /** the model's chat template (Jinja: GGUF tokenizer.chat_template, tokenizer_config.json chat_template) */
  chatTemplate?: string;
}

// a code point's 1-4 bytes as a lookup key
const latin1 = (b: Uint8Array): string => {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
};

/** Pieces packed into one buffer (what the tokenizer keeps). */
export function packPieces(pieces: readonly Uint8Array[]): PackedPieces {
  const offsets = new Uint32Array(pieces.length + 1);
  for (let i = 0; i < pieces.length; i++) offsets[i + 1] = offsets[i]! + pieces[i]!.length;
  const bytes = new Uint8Array(offsets[pieces.length]!);
  pieces.forEach((p, i) => bytes.set(p, offsets[i]!));
  return { bytes, offsets };
}

/** SentencePiece pieces as text (U+2581 for a space, as GGUF and tokenizer.json store them), packed as UTF-8. */
export function packTextPieces(pieces: readonly string[]): PackedPieces {
  const offsets = new Uint32Array(pieces.length + 1);
  const text = pieces.map((p, i) => {
    const t = p.includes('\u2581') ? p.replaceAll('\u2581', ' ') : p;
    offsets[i + 1] = offsets[i]! + Buffer.byteLength(t, 'utf8');
    return t;
  });
  const bytes = Buffer.from(text.join(''), 'utf8');
  if (bytes.length !== offsets[pieces.length]) throw new RangeError('tokenizer: the pieces did not encode to their own lengths');
  return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), offsets };
}

const isPacked = (p: TokenizerSpec['pieces']): p is PackedPieces => !Array.isArray(p);

export class Tokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  private readonly bytes: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly keys: string[];
  private readonly scores: Float32Array;
  private readonly lookup = new Map<string, number>();
  private readonly byteToken = new Int32Array(256).fill(-1);
  private readonly tokenByte: Int16Array;
  private readonly addSpacePrefix: boolean;
  /** 'spm' (SentencePiece-style) or 'bpe' (byte-level) */
  readonly kind: 'spm' | 'bpe';
  private readonly spec: TokenizerSpec;
  private readonly bpe?: ByteBpe;
  private readonly preRe?: RegExp;
  private readonly digitsFirst: boolean = false;
  private readonly specialRe?: RegExp;
  private readonly userRe?: RegExp;
  private readonly userIds = new Set<number>();
  private readonly specialIds = new Set<number>();
  /** special tokens by their text (the first id of a text) */
  private readonly specialByText = new Map<string, number>();
  private readonly addBos: boolean;

  /** What the tokenizer was built from (saveModel stores it). */
  toSpec(): TokenizerSpec & { pieces: Uint8Array[] } {
    const pieces: Uint8Array[] = [];
    for (let i = 0; i < this.vocabSize; i++) pieces.push(this.bytes.slice(this.offsets[i], this.offsets[i + 1]));
    return { ...this.spec, pieces, scores: Array.from(this.scores), bos: this.bos, eos: this.eos, addSpacePrefix: this.addSpacePrefix };
  }

  /** The model's chat template (Jinja source), if its files carry one. */
  get chatTemplate(): string | undefined {
    return this.spec.chatTemplate;
  }

  /** Whether id is a special token of a byte-level vocabulary (its piece is its text). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Whether id is a user-defined token of a byte-level vocabulary (cut out of any text). */
  isUserDefined(id: number): boolean {
    return this.userIds.has(id);
  }

  /** A byte-level token in its vocabulary spelling (special tokens: their text), as GGUF and tokenizer.json store it. */
  spelled(id: number): string {
    const b = this.bytes.subarray(this.offsets[id]!, this.offsets[id + 1]!);
    return this.specialIds.has(id) ? new TextDecoder().decode(b) : spell(b);
  }

  constructor(spec: TokenizerSpec) {
    const packed = isPacked(spec.pieces) ? spec.pieces : packPieces(spec.pieces);
    const n = packed.offsets.length - 1;
    if (n < 0 || packed.offsets[0] !== 0 || packed.offsets[n]! > packed.bytes.length) throw new RangeError('tokenizer: packed pieces do not match their offsets');
    this.bytes = packed.bytes;
    this.offsets = packed.offsets;
    this.vocabSize = n;
    this.scores = Float32Array.from(spec.scores);
    this.bos = spec.bos;
    this.eos = spec.eos;
    this.kind = spec.kind ?? 'spm';
    this.addSpacePrefix = this.kind === 'spm' && (spec.addSpacePrefix ?? true);
    this.addBos = this.kind === 'spm' || spec.addBos !== false;
    this.spec = this.kind === 'bpe'
      ? { kind: 'bpe', merges: spec.merges ?? [], pre: spec.pre ?? 'gpt2', ignoreMerges: spec.ignoreMerges === true, nfc: spec.nfc === true, special: [...(spec.special ?? [])], userDefined: [...(spec.userDefined ?? [])], addBos: this.addBos, pieces: [], scores: [], bos: spec.bos, eos: spec.eos }
      : { pieces: [], scores: [], bos: spec.bos, eos: spec.eos, ...(spec.prefixUnlessSpace === true ? { prefixUnlessSpace: true } : {}) };
    if (spec.chatTemplate !== undefined) {
      if (typeof spec.chatTemplate !== 'string') throw new TypeError('tokenizer: chatTemplate must be a string');
      this.spec.chatTemplate = spec.chatTemplate;
    }
    // SentencePiece: one latin1 key per piece, sliced natively from the packed bytes
    const all = Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.keys = new Array<string>(this.kind === 'spm' ? n : 0);
    this.tokenByte = new Int16Array(n).fill(-1);
    for (let i = 0; i < n; i++) {
      const a = this.offsets[i]!, b = this.offsets[i + 1]!;
      if (b < a) throw new RangeError('tokenizer: packed pieces do not match their offsets');
      if (this.kind === 'bpe') continue;  // keyed by spelling below
      const k = all.toString('latin1', a, b);
      this.keys[i] = k;
      if (!this.lookup.has(k)) this.lookup.set(k, i);
      // a byte token <0xXX>
      if (k.length === 6 && k.startsWith('<0x') && k[5] === '>' && /^[0-9A-Fa-f]{2}$/.test(k.slice(3, 5))) {
        const v = parseInt(k.slice(3, 5), 16);
        this.tokenByte[i] = v;
        if (this.byteToken[v] === -1) this.byteToken[v] = i;
      }
    }
    if (this.kind === 'bpe') {
      const vocab = new Map<string, number>();
      for (const id of spec.special ?? []) {
        if (!Number.isInteger(id) || id < 0 || id >= n) throw new RangeError(`tokenizer: special token id ${id} is outside [0, ${n})`);
        this.specialIds.add(id);
      }
      const utf8 = new TextDecoder();
      for (let i = 0; i < n; i++) {
        const b = this.bytes.subarray(this.offsets[i]!, this.offsets[i + 1]!);
        if (this.specialIds.has(i)) this.specialByText.set(utf8.decode(b), i);
        else {
          const key = spell(b);
          if (!vocab.has(key)) vocab.set(key, i);
        }
      }
      this.bpe = new ByteBpe(vocab, spec.merges ?? [], spec.ignoreMerges === true);
      this.preRe = preTokenizerRegex(spec.pre ?? 'gpt2');
      this.digitsFirst = preSplitsDigits(spec.pre ?? 'gpt2');
      for (const id of spec.userDefined ?? []) {
        if (!this.specialIds.has(id)) throw new RangeError(`tokenizer: user-defined token ${id} is not among the special tokens`);
        this.userIds.add(id);
      }
      // special tokens' text, longest first (a token that starts another must not cut it)
      const alternation = (ts: string[]) => {
        const esc = ts.filter((t) => t.length > 0).sort((a, b) => b.length - a.length).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
        return esc.length > 0 ? new RegExp(esc.join('|'), 'gu') : undefined;
      };
      const texts = [...this.specialByText.keys()];
      this.specialRe = alternation(texts);
      this.userRe = alternation(texts.filter((t) => this.userIds.has(this.specialByText.get(t)!)));
    }
  }

  /** Builds a byte-level vocabulary from tokens in their byte-level spelling (GGUF, tokenizer.json); special ones as text. */
  static fromByteLevel(tokens: readonly string[], spec: Omit<TokenizerSpec, 'pieces' | 'scores' | 'kind'>): Tokenizer {
    const special = new Set(spec.special ?? []);
    const enc = new TextEncoder();
    const pieces = tokens.map((t, i) => {
      if (special.has(i)) return enc.encode(t);
      const b = spelledBytes(t);
      if (b === undefined) throw new RangeError(`tokenizer: token ${i} (${JSON.stringify(t.slice(0, 40))}) is not in the byte-level spelling and not special`);
      return b;
    });
    return new Tokenizer({ ...spec, kind: 'bpe', pieces, scores: new Float32Array(tokens.length) });
  }

  /** Parses llama2.c's tokenizer.bin: max_token_length (i32), then per token: score (f32), length (i32), bytes. */
  static fromLlama2c(buf: Uint8Array, vocabSize: number): Tokenizer {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const pieces: Uint8Array[] = [];
    const scores = new Float32Array(vocabSize);
    let p = 4;
    for (let i = 0; i < vocabSize; i++) {
      if (p + 8 > buf.length) throw new RangeError(`tokenizer: file is truncated at token ${i} of ${vocabSize}`);
      scores[i] = dv.getFloat32(p, true);
      const len = dv.getInt32(p + 4, true);
      p += 8;
      if (len < 0 || len > 1024 || p + len > buf.length) throw new RangeError(`tokenizer: token ${i} has a bad length ${len} (file corrupted or truncated)`);
      pieces.push(buf.slice(p, p + len));
      p += len;
    }
    return new Tokenizer({ pieces, scores, bos: 1, eos: 2 });
  }

  /** Token ids of `text` (BOS first unless { bos: false }). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError(`encode: text must be a string; got ${typeof text}`);
    if (typeof opts !== 'object' || opts === null) throw new TypeError('encode: options must be an object');
    const ids: number[] = [];
    if (opts.bos ?? this.addBos) ids.push(this.bos);
    if (this.kind === 'bpe') {
      this.encodeBpe(this.spec.nfc ? text.normalize('NFC') : text, opts.special === true, ids);
    } else if (text.length > 0) {
      const bytes = new TextEncoder().encode(text);
      const toks: number[] = [];
      if (this.addSpacePrefix && !(this.spec.prefixUnlessSpace === true && text.startsWith(' '))) {
        const sp = this.lookup.get(' ');
        if (sp !== undefined) toks.push(sp);
      }
      for (let i = 0; i < bytes.length;) {
        // one UTF-8 code point (at most 4 bytes)
        let j = i + 1;
        while (j < bytes.length && (bytes[j]! & 0xc0) === 0x80 && j - i < 4) j++;
        const cp = bytes.subarray(i, j);
        const id = this.lookup.get(latin1(cp));
        if (id !== undefined) toks.push(id);
        else for (const b of cp) toks.push(this.byteToken[b]! >= 0 ? this.byteToken[b]! : b + 3);
        i = j;
      }
      for (const t of this.merge(toks)) ids.push(t);
    }
    if (opts.eos) ids.push(this.eos);
    return ids;
  }

  // byte-level: special tokens cut out (user-defined ones always, the others when asked),
  // then the pre-tokenizer's pieces merged one by one
  private encodeBpe(text: string, special: boolean, ids: number[]): void {
    const re = (seg: string) => {
      for (const m of seg.matchAll(this.preRe!)) this.bpe!.encodeWord(m[0], ids);
    };
    // every digit its own piece first, where the pre-tokenizer says so (SmolLM)
    const words = !this.digitsFirst ? re : (seg: string) => {
      for (const part of seg.split(DIGIT)) if (part) re(part);
    };
    const cut = special ? this.specialRe : this.userRe;
    if (!cut) {
      words(text);
      return;
    }
    let at = 0;
    for (const m of text.matchAll(cut)) {
      if (m.index! > at) words(text.slice(at, m.index));
      ids.push(this.specialByText.get(m[0])!);
      at = m.index! + m[0].length;
    }
    if (at < text.length) words(text.slice(at));
  }

  // SentencePiece merges by score (see mergePairs)
  private merge(toks: number[]): number[] {
    return mergePairs(toks, (a, b) => {
      const m = this.lookup.get(this.keys[a]! + this.keys[b]!);
      if (m === undefined) return undefined;
      const s = this.scores[m]!;
      return s > -Infinity ? { m, s } : undefined;  // NaN / -Infinity scores never merge (as run.c's strict comparison)
    });
  }

  /** The bytes of token `id` as it prints after `prev` (a leading space is dropped after BOS). */
  pieceBytes(id: number, prev = -1): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`decode: token id ${id} is outside [0, ${this.vocabSize})`);
    const byte = this.tokenByte[id]!;
    if (byte >= 0) return Uint8Array.of(byte);
    const a = this.offsets[id]!, b = this.offsets[id + 1]!;
    return this.bytes.subarray(this.kind === 'spm' && prev === this.bos && b > a && this.bytes[a] === 0x20 ? a + 1 : a, b);
  }

  /** Text of a token sequence (BOS / EOS print nothing; bytes reassemble into UTF-8). */
  decode(ids: readonly number[] | Int32Array): string {
    const d = new StreamDecoder(this);
    let s = '';
    let prev = -1;
    for (const id of ids) {
      s += d.push(id, prev);
      prev = id;
    }
    return s + d.flush();
  }
}

/** Incremental decode for streaming: text appears once its UTF-8 bytes are complete. */
export class StreamDecoder {
  private readonly dec = new TextDecoder('utf-8', { fatal: false });
  constructor(private readonly tok: Tokenizer) {}

  push(id: number, prev: number): string {
    if (id === this.tok.bos || id === this.tok.eos) return '';
    const bytes = this.tok.pieceBytes(id, prev);
    // a single control byte that is not whitespace prints nothing (as run.c's safe_printf)
    if (bytes.length === 1 && bytes[0]! < 0x20 && ![0x09, 0x0a, 0x0b, 0x0c, 0x0d].includes(bytes[0]!)) return '';
    return this.dec.decode(bytes, { stream: true });
  }

  flush(): string {
    return this.dec.decode();
  }
}
