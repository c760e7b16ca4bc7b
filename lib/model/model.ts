// model.ts - loadModel() and the Model class: file format detection, weights
// into native memory (read once), the native forward pass, and generation
// (sampling, streaming, stop conditions, statistics).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe } from '../errors';
import { loadNative, type NativeStorage } from '../native';
import { parseLlama2c, type ParsedModel } from './llama2c';
import { Sampler, checkSampling, type SamplingOptions } from './sampler';
import { StreamDecoder, Tokenizer } from './tokenizer';

export interface ModelConfig {
  arch: 'llama';
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  hidden: number;
  vocab: number;
  maxSeq: number;
  ropeTheta: number;
  normEps: number;
  tiedEmbeddings: boolean;
}

export interface LoadModelOptions {
  /** tokenizer file (llama2.c checkpoints: tokenizer.bin; default: tokenizer.bin beside the model) */
  tokenizer?: string;
  /** 'int8': quantize every linear per output channel at load and run them through the int8 GEMM with dynamic per-token activations */
  weights?: 'f32' | 'int8';
  /** context length (default: the model's) */
  maxSeq?: number;
  /** KV cache storage (default 'f32') */
  kvCache?: 'f32' | 'f16' | 'i8';
}

export interface GenerateOptions extends SamplingOptions {
  /** tokens to generate at most (default 128) */
  maxTokens?: number;
  /** stop when the text ends with one of these (the stop string itself is not yielded) */
  stop?: string[];
  /** extend the previous context instead of starting from an empty one */
  continue?: boolean;
  signal?: AbortSignal;
}

export interface GeneratedToken {
  id: number;
  /** the text this token adds (may be '' while a UTF-8 sequence is incomplete) */
  text: string;
}

export interface GenerationStats {
  promptTokens: number;
  promptTokensPerSec: number;
  generatedTokens: number;
  decodeTokensPerSec: number;
}

interface NativeModel {
  forward(tokens: Int32Array, all: boolean): Promise<Float32Array>;
  pos(): number;
  truncate(n: number): void;
  dispose(): void;
  meta(): { cacheBytes: number; nativeBytes: number };
}

const KV = { f32: 0, f16: 1, i8: 2 } as const;

export class Model {
  readonly config: ModelConfig;
  readonly tokenizer: Tokenizer;
  /** what the last generate() did */
  stats: GenerationStats = { promptTokens: 0, promptTokensPerSec: 0, generatedTokens: 0, decodeTokensPerSec: 0 };
  /** token id that ends generation (llama2.c: BOS, as run.c; other formats: EOS) */
  readonly stopIds: readonly number[];
  private native: NativeModel | null;
  private queue: Promise<unknown> = Promise.resolve();

  /** @internal */
  constructor(native: NativeModel, config: ModelConfig, tokenizer: Tokenizer, stopIds: number[]) {
    this.native = native;
    this.config = config;
    this.tokenizer = tokenizer;
    this.stopIds = stopIds;
  }

  /** Positions in the current context. */
  get length(): number {
    return this.live('length').pos();
  }

  /** Native bytes held (weights copied or quantized at load, and the KV cache). */
  get nativeBytes(): number {
    return this.live('nativeBytes').meta().nativeBytes;
  }

  /** Appends tokens to the context and returns the logits of the last one (Float32Array(vocab)). */
  forward(ids: readonly number[] | Int32Array): Promise<Float32Array> {
    try {
      const toks = this.checkIds('forward', ids);
      return this.serial(() => this.live('forward').forward(toks, false));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Appends tokens and returns the logits of every one of them (Float32Array(n * vocab)). */
  forwardAll(ids: readonly number[] | Int32Array): Promise<Float32Array> {
    try {
      const toks = this.checkIds('forwardAll', ids);
      return this.serial(() => this.live('forwardAll').forward(toks, true));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Empties the context. */
  reset(): void {
    this.live('reset').truncate(0);
  }

  /**
   * Streams generated tokens. A string prompt is encoded with BOS; an id array is used
   * as given. Starts from an empty context unless { continue: true }.
   */
  async *generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
    const op = 'generate';
    checkSampling(op, opts);
    const maxTokens = opts.maxTokens ?? 128;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new RangeError(`${op}: maxTokens must be a non-negative integer; got ${describe(maxTokens)}`);
    const stop = opts.stop ?? [];
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0)) throw new TypeError(`${op}: stop must be an array of non-empty strings`);
    const ids = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : [...prompt];
    if (ids.length === 0) throw new RangeError(`${op}: the prompt has no tokens`);
    this.checkIds(op, ids);
    const start = opts.continue ? this.length : 0;
    if (start + ids.length > this.config.maxSeq) {
      throw new RangeError(`${op}: the prompt (${ids.length} tokens${start ? ` after ${start} in context` : ''}) does not fit maxSeq ${this.config.maxSeq}`);
    }
    opts.signal?.throwIfAborted();
    if (!opts.continue) this.reset();
    const sampler = new Sampler(opts);
    const stats: GenerationStats = { promptTokens: ids.length, promptTokensPerSec: 0, generatedTokens: 0, decodeTokensPerSec: 0 };
    this.stats = stats;
    const t0 = performance.now();
    let logits = await this.forward(ids);
    const t1 = performance.now();
    stats.promptTokensPerSec = ids.length / ((t1 - t0) / 1000);
    const dec = new StreamDecoder(this.tokenizer);
    let prev = ids[ids.length - 1]!;
    let text = '', emitted = 0;
    for (let n = 0; n < maxTokens; n++) {
      opts.signal?.throwIfAborted();
      const id = sampler.sample(logits);
      if (this.stopIds.includes(id)) break;
      const piece = dec.push(id, prev);
      prev = id;
      stats.generatedTokens++;
      text += piece;
      const hit = stop.find((s) => text.endsWith(s));
      if (hit) {
        const keep = text.length - hit.length;
        if (keep > emitted) yield { id, text: text.slice(emitted, keep) };
        break;
      }
      // hold back text that could be the start of a stop string
      let hold = 0;
      for (const s of stop) for (let l = Math.min(s.length - 1, text.length); l > hold; l--) if (text.endsWith(s.slice(0, l))) { hold = l; break; }
      const out = text.slice(emitted, text.length - hold);
      emitted += out.length;
      yield { id, text: out };
      if (n + 1 === maxTokens || this.length >= this.config.maxSeq) break;
      logits = await this.forward([id]);
      stats.decodeTokensPerSec = stats.generatedTokens / ((performance.now() - t1) / 1000);
    }
    if (stats.generatedTokens > 0 && stats.decodeTokensPerSec === 0) stats.decodeTokensPerSec = stats.generatedTokens / ((performance.now() - t1) / 1000);
  }

  dispose(): void {
    this.native?.dispose();
    this.native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private live(op: string): NativeModel {
    if (!this.native) throw new TypeError(`${op}: the model has been disposed`);
    return this.native;
  }

  private checkIds(op: string, ids: unknown): Int32Array {
    if (!(Array.isArray(ids) || ids instanceof Int32Array)) throw new TypeError(`${op}: token ids must be an array of integers; got ${describe(ids)}`);
    const a = ids as ArrayLike<number>;
    if (a.length === 0) throw new RangeError(`${op}: no token ids`);
    for (let i = 0; i < a.length; i++) {
      const t = a[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= this.config.vocab) throw new RangeError(`${op}: token id ${String(t)} at index ${i} is outside [0, ${this.config.vocab})`);
    }
    return Int32Array.from(a);
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const p = this.queue.then(f, f);
    this.queue = p.catch(() => undefined);
    return p;
  }
}

function detect(file: string): 'gguf' | 'hf' | 'llama2c' {
  const st = fs.statSync(file);
  if (st.isDirectory()) return 'hf';
  const fd = fs.openSync(file, 'r');
  try {
    const magic = Buffer.alloc(4);
    fs.readSync(fd, magic, 0, 4, 0);
    return magic.toString('latin1') === 'GGUF' ? 'gguf' : 'llama2c';
  } finally {
    fs.closeSync(fd);
  }
}

/** Loads a Llama-family model: a llama2.c checkpoint (+ tokenizer.bin). */
export async function loadModel(file: string, opts: LoadModelOptions = {}): Promise<Model> {
  const op = 'loadModel';
  if (typeof file !== 'string') throw new TypeError(`${op}: path must be a string; got ${describe(file)}`);
  if (!fs.existsSync(file)) throw new Error(`${op}: ${file} does not exist`);
  const weights = opts.weights ?? 'f32';
  if (weights !== 'f32' && weights !== 'int8') throw new TypeError(`${op}: weights must be 'f32' or 'int8'; got ${describe(weights)}`);
  const kv = opts.kvCache ?? 'f32';
  if (!(kv in KV)) throw new TypeError(`${op}: kvCache must be 'f32', 'f16' or 'i8'; got ${describe(kv)}`);
  const format = detect(file);
  if (format !== 'llama2c') throw new Error(`${op}: ${format === 'gguf' ? 'GGUF' : 'Hugging Face folder'} models are not supported yet (${file})`);
  const parsed: ParsedModel = parseLlama2c(file);
  const tokPath = opts.tokenizer ?? path.join(path.dirname(file), 'tokenizer.bin');
  if (!fs.existsSync(tokPath)) throw new Error(`${op}: llama2.c checkpoints need a tokenizer: pass { tokenizer: 'path/to/tokenizer.bin' } (${tokPath} does not exist)`);
  const tokenizer = Tokenizer.fromLlama2c(fs.readFileSync(tokPath), parsed.config.vocab);
  const maxSeq = opts.maxSeq ?? parsed.config.maxSeq;
  if (!Number.isInteger(maxSeq) || maxSeq < 1 || maxSeq > 2 ** 24) throw new RangeError(`${op}: maxSeq must be an integer in [1, 2^24]; got ${describe(maxSeq)}`);
  const config: ModelConfig = { ...parsed.config, maxSeq };
  const nat = loadNative();
  const storage: NativeStorage = await nat.readFile(file, 0, parsed.fileBytes);
  try {
    const ref = (offset: number) => ({ storage, offset });
    const w = parsed.weights;
    const native = await nat.createModel(
      { dim: config.dim, hidden: config.hidden, layers: config.layers, heads: config.heads, kvHeads: config.kvHeads, vocab: config.vocab,
        maxSeq, ropeTheta: config.ropeTheta, normEps: config.normEps, ropeNeox: false, kvType: KV[kv] },
      {
        embed: ref(w.embed), finalNorm: ref(w.finalNorm), output: ref(w.output),
        layers: w.layers.map((l) => ({
          attnNorm: ref(l.attnNorm), ffnNorm: ref(l.ffnNorm), wq: ref(l.wq), wk: ref(l.wk), wv: ref(l.wv), wo: ref(l.wo),
          w1: ref(l.w1), w2: ref(l.w2), w3: ref(l.w3),
        })),
      },
      weights === 'int8') as NativeModel;
    return new Model(native, config, tokenizer, [tokenizer.bos]);
  } finally {
    // int8 models copied / quantized what they need; f32 models keep their own reference
    storage.dispose();
  }
}
