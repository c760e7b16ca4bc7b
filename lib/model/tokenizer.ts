// tokenizer.ts - SentencePiece-style BPE with scores, as llama2.c's run.c and
// llama.cpp's SPM tokenizer apply it: a dummy-prefix space, UTF-8 code points
// looked up whole, unknown ones spelled as byte tokens <0xXX>, then repeated
// merges of the adjacent pair whose merged piece scores highest (leftmost on
// ties). Pieces are byte strings; decode() reassembles UTF-8 across tokens.

export interface EncodeOptions {
  /** prepend the BOS token (default true) */
  bos?: boolean;
  /** append the EOS token (default false) */
  eos?: boolean;
}

export interface TokenizerSpec {
  pieces: Uint8Array[];
  scores: Float32Array | number[];
  bos: number;
  eos: number;
  /** add ' ' in front of non-empty text before BPE (SentencePiece add_dummy_prefix; default true) */
  addSpacePrefix?: boolean;
}

const latin1 = (b: Uint8Array): string => {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
};

export class Tokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  private readonly pieces: Uint8Array[];
  private readonly keys: string[];
  private readonly scores: Float32Array;
  private readonly lookup = new Map<string, number>();
  private readonly byteToken = new Int32Array(256).fill(-1);
  private readonly tokenByte: Int16Array;
  private readonly addSpacePrefix: boolean;

  /** What the tokenizer was built from (saveModel stores it). */
  toSpec(): TokenizerSpec {
    return { pieces: this.pieces.map((p) => p.slice()), scores: Array.from(this.scores), bos: this.bos, eos: this.eos, addSpacePrefix: this.addSpacePrefix };
  }

  constructor(spec: TokenizerSpec) {
    this.pieces = spec.pieces;
    this.vocabSize = spec.pieces.length;
    this.scores = Float32Array.from(spec.scores);
    this.bos = spec.bos;
    this.eos = spec.eos;
    this.addSpacePrefix = spec.addSpacePrefix ?? true;
    this.keys = spec.pieces.map(latin1);
    this.tokenByte = new Int16Array(this.vocabSize).fill(-1);
    this.keys.forEach((k, i) => {
      if (!this.lookup.has(k)) this.lookup.set(k, i);
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(k);
      if (m) {
        const b = parseInt(m[1]!, 16);
        this.tokenByte[i] = b;
        if (this.byteToken[b] === -1) this.byteToken[b] = i;
      }
    });
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
    if (opts.bos ?? true) ids.push(this.bos);
    if (text.length > 0) {
      const bytes = new TextEncoder().encode(text);
      const toks: number[] = [];
      if (this.addSpacePrefix) {
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

  /**
   * Merges the best-scoring adjacent pair (leftmost on ties) until none merges, as
   * run.c does, in O(n log n): candidate pairs wait in a heap ordered by (score,
   * position); a merge links its symbol to its neighbours and offers the two new
   * pairs; entries whose symbols changed since are skipped when they come up.
   */
  private merge(toks: number[]): number[] {
    const n = toks.length;
    if (n < 2) return toks;
    const id = Int32Array.from(toks), next = new Int32Array(n), prev = new Int32Array(n), ver = new Uint32Array(n);
    for (let i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
    interface Pair { s: number; l: number; r: number; m: number; vl: number; vr: number }
    const heap: Pair[] = [];
    const before = (a: Pair, b: Pair) => a.s > b.s || (a.s === b.s && a.l < b.l);
    const offer = (l: number, r: number) => {
      const m = this.lookup.get(this.keys[id[l]!]! + this.keys[id[r]!]!);
      if (m === undefined) return;
      const s = this.scores[m]!;
      if (!(s > -Infinity)) return;  // NaN / -Infinity scores never merge (as run.c's strict comparison)
      const e = { s, l, r, m, vl: ver[l]!, vr: ver[r]! };
      let i = heap.push(e) - 1;
      while (i > 0) {
        const up = (i - 1) >> 1;
        if (!before(e, heap[up]!)) break;
        heap[i] = heap[up]!;
        i = up;
      }
      heap[i] = e;
    };
    const pop = (): Pair => {
      const top = heap[0]!, last = heap.pop()!;
      if (heap.length > 0) {
        let i = 0;
        for (;;) {
          const a = 2 * i + 1, b = a + 1;
          let c = a;
          if (a >= heap.length) break;
          if (b < heap.length && before(heap[b]!, heap[a]!)) c = b;
          if (!before(heap[c]!, last)) break;
          heap[i] = heap[c]!;
          i = c;
        }
        heap[i] = last;
      }
      return top;
    };
    for (let i = 0; i + 1 < n; i++) offer(i, i + 1);
    while (heap.length > 0) {
      const e = pop();
      if (ver[e.l] !== e.vl || ver[e.r] !== e.vr || next[e.l] !== e.r) continue;  // stale
      id[e.l] = e.m;
      ver[e.l]!++;
      ver[e.r]!++;
      next[e.l] = next[e.r]!;
      if (next[e.l]! >= 0) prev[next[e.l]!] = e.l;
      if (prev[e.l]! >= 0) offer(prev[e.l]!, e.l);
      if (next[e.l]! >= 0) offer(e.l, next[e.l]!);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(id[i]!);
    return out;
  }

  /** The bytes of token `id` as it prints after `prev` (a leading space is dropped after BOS). */
  pieceBytes(id: number, prev = -1): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`decode: token id ${id} is outside [0, ${this.vocabSize})`);
    const b = this.tokenByte[id]!;
    if (b >= 0) return Uint8Array.of(b);
    const p = this.pieces[id]!;
    return prev === this.bos && p[0] === 0x20 ? p.subarray(1) : p;
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
