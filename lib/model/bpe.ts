// bpe.ts - byte-level BPE (GPT-2 style), as Llama 3, Qwen 2 / 2.5 / 3, SmolLM
// and Mistral's newer vocabularies use it: text is split by the pre-tokenizer's
// regex, each piece's UTF-8 bytes are spelled with GPT-2's byte -> character
// map, and adjacent symbols are merged lowest merge rank first (leftmost on
// ties, as Hugging Face tokenizers and llama.cpp do). Vocabularies store tokens
// in that spelling; the tokenizer keeps each token's raw bytes, so decoding is
// the SentencePiece path's byte reassembly.
import { mergePairs } from './merge';

/** GPT-2's map from a byte to the character that spells it in vocabularies and merges. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const keep = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep(b) ? b : 256 + n++);
  return out;
})();

const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** The raw bytes a vocabulary entry spells (undefined where a character is outside the byte map: not a byte-level token). */
export function spelledBytes(token: string): Uint8Array | undefined {
  const out = new Uint8Array(token.length);
  let n = 0;
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) return undefined;
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/** A byte string in the byte-level spelling. */
export function spell(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]!];
  return s;
}

/** Text's UTF-8 bytes in the byte-level spelling (lone surrogates as U+FFFD, as TextEncoder). */
export function spellText(text: string): string {
  let s = '';
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      s += BYTE_TO_CHAR[c];
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x800) s += BYTE_TO_CHAR[0xc0 | (c >> 6)]! + BYTE_TO_CHAR[0x80 | (c & 63)]!;
    else if (c < 0x10000) s += BYTE_TO_CHAR[0xe0 | (c >> 12)]! + BYTE_TO_CHAR[0x80 | ((c >> 6) & 63)]! + BYTE_TO_CHAR[0x80 | (c & 63)]!;
    else s += BYTE_TO_CHAR[0xf0 | (c >> 18)]! + BYTE_TO_CHAR[0x80 | ((c >> 12) & 63)]! + BYTE_TO_CHAR[0x80 | ((c >> 6) & 63)]! + BYTE_TO_CHAR[0x80 | (c & 63)]!;
  }
  return s;
}

// The contractions of the Llama 3 / Qwen regexes are case-insensitive ((?i:...),
// which JavaScript regexes do not take inline): spelled out per letter.
const CONTRACTIONS_I = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]";

/** Pre-tokenizer regexes by llama.cpp's `tokenizer.ggml.pre` name. */
export const PRE_TOKENIZERS: Readonly<Record<string, string>> = {
  // Llama 3 / 3.1 / 3.2 (tiktoken's cl100k with 1-3 digit runs)
  'llama-bpe': `${CONTRACTIONS_I}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`,
  // Qwen 2 / 2.5 / 3: the same with single digits
  qwen2: `${CONTRACTIONS_I}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`,
  // GPT-2 (and ByteLevel pre-tokenizers with use_regex)
  gpt2: `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`,
};
// other names for the same splits
const ALIASES: Readonly<Record<string, string>> = { llama3: 'llama-bpe', 'llama-v3': 'llama-bpe' };
// splits that first isolate every digit, then apply a regex to the text between (SmolLM:
// tokenizer.json's Digits(individual_digits) then ByteLevel's GPT-2 regex)
const DIGITS_FIRST: Readonly<Record<string, string>> = { smollm: 'gpt2' };

/** Whether a pre-tokenizer isolates every digit before its regex runs. */
export function preSplitsDigits(pre: string): boolean {
  return DIGITS_FIRST[pre] !== undefined;
}

// a tokenizer.json (Oniguruma) pattern as JavaScript takes it: the inline (?i:...) contractions spelled out
const jsPattern = (pattern: string) => pattern.replace(/\(\?i:'s\|'t\|'re\|'ve\|'m\|'ll\|'d\)/g, CONTRACTIONS_I);

/** A pre-tokenizer pattern from tokenizer.json by llama.cpp's name where it is one of the known splits, else the pattern. */
export function preTokenizerName(pattern: string): string {
  const src = jsPattern(pattern);
  for (const [name, re] of Object.entries(PRE_TOKENIZERS)) if (re === src) return name;
  return pattern;
}

/** The regex of a pre-tokenizer name or an Oniguruma-style pattern from tokenizer.json, as a JavaScript RegExp. */
export function preTokenizerRegex(pre: string): RegExp {
  const named = PRE_TOKENIZERS[pre] ?? PRE_TOKENIZERS[ALIASES[pre] ?? DIGITS_FIRST[pre] ?? ''];
  let src = named;
  if (src === undefined) {
    if (/^[a-z0-9][a-z0-9._-]*$/.test(pre)) {
      throw new RangeError(`tokenizer: pre-tokenizer '${pre}' is not supported (${[...Object.keys(PRE_TOKENIZERS), ...Object.keys(ALIASES), ...Object.keys(DIGITS_FIRST)].join(', ')})`);
    }
    src = jsPattern(pre);
  }
  try {
    return new RegExp(src, 'gu');
  } catch (e) {
    throw new RangeError(`tokenizer: the pre-tokenizer pattern does not compile as a JavaScript regex: ${(e as Error).message}`);
  }
}

/**
 * Byte-level BPE over one vocabulary: `vocab` maps a spelled token to its id,
 * `merges` are "a b" pairs, best first. encodeWord() returns the ids of one
 * pre-tokenized piece; results are cached per piece (words repeat).
 */
export class ByteBpe {
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();
  /** each token's spelling, by id (tokens outside the byte-level spelling: undefined) */
  private readonly spellings: string[] = [];

  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    merges: readonly string[],
    /** a piece that is a whole token is that token, merges or not (tokenizer.json ignore_merges: Llama 3) */
    private readonly ignoreMerges: boolean,
  ) {
    merges.forEach((m, i) => {
      if (!this.ranks.has(m)) this.ranks.set(m, i);
    });
    for (const [sp, id] of vocab) this.spellings[id] = sp;
  }

  /** The ids of one pre-tokenized piece of text. */
  encodeWord(word: string, out: number[]): void {
    const hit = this.cache.get(word);
    if (hit) {
      for (const id of hit) out.push(id);
      return;
    }
    const ids = this.merge(spellText(word));
    if (this.cache.size < 1 << 16) this.cache.set(word, ids);
    for (const id of ids) out.push(id);
  }

  // byte tokens, then merges lowest rank first, leftmost among equals (mergePairs:
  // O(n log n), so a long piece such as a base64 blob stays fast)
  private merge(word: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const toks: number[] = [];
    for (const ch of word) {
      const c = this.vocab.get(ch);
      if (c === undefined) throw new RangeError(`tokenizer: the vocabulary has no token for the byte spelled '${ch}'`);
      toks.push(c);
    }
    return mergePairs(toks, (a, b) => {
      const sa = this.spellings[a]!, sb = this.spellings[b]!;
      const r = this.ranks.get(sa + ' ' + sb);
      if (r === undefined) return undefined;
      const m = this.vocab.get(sa + sb);  // a merge whose result is no token does not happen
      return m === undefined ? undefined : { m, s: -r };
    });
  }
}
