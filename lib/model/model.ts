// model.ts - loadModel() and the Model class: file format detection, weights
// into native memory (read once), the native forward pass, and generation
// (sampling, streaming, stop conditions, statistics).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkOptions, describe } from '../errors';
import { loadNative, type NativeLinear, type NativePacked, type NativeQ4, type NativeSparse, type NativeStorage, type SavedPart } from '../native';
import { GGML_F32, GGML_Q8_0, ggmlTypeName, ggmlTypes, readGguf } from './gguf';
import { readHfConfig, readHfTokenizer, readSafetensors, readSafetensorsFile, type SafetensorsEntry } from './hf';
import { readBoundedFile, regularFileSize } from './files';
import { parseLlama2c, type ParsedModel } from './llama2c';
import type { QuantizeReport } from './quantize_model';
import { Sampler, checkSampling, type SamplingOptions } from './sampler';
import { StreamDecoder, Tokenizer, packTextPieces, type TokenizerSpec } from './tokenizer';
import { Conversation, chat as chatOnce, type ChatMessage, type ChatOptions } from './chat';
import { Batcher, Slots, type BatchTarget } from './batch';
import { Tensor, parseDevice } from '../tensor';

/**
 * The decoder families sparq runs: 'llama' (Llama 1-3.x, Mistral, SmolLM, TinyLlama...), 'qwen2'
 * (Qwen 2 / 2.5: q / k / v biases, half-split RoPE), 'qwen3' (Qwen 3 dense: RMSNorm of each q / k
 * head, head size independent of dim). Architecture names a file may carry map onto these.
 */
export type ModelArch = 'llama' | 'qwen2' | 'qwen3';

export interface ModelConfig {
  arch: ModelArch;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** features per attention head (dim / heads, unless heads were pruned) */
  headDim: number;
  hidden: number;
  vocab: number;
  maxSeq: number;
  ropeTheta: number;
  normEps: number;
  tiedEmbeddings: boolean;
  /** RoPE frequency scaling: Llama 3.1's 'llama3' (per-frequency factors) or 'linear' (positions / factor) */
  ropeScaling?: { type: 'llama3' | 'linear'; factor?: number };
}

export interface LoadModelOptions {
  /** tokenizer file (llama2.c checkpoints: tokenizer.bin; default: tokenizer.bin beside the model) */
  tokenizer?: string;
  /** 'int8': quantize every linear per output channel at load and run them through the int8 GEMM with dynamic per-token activations */
  weights?: 'f32' | 'int8';
  /** context length (default: the model's, at most 8192: Llama 3.2's 131072 positions would reserve a 4.3 GB f16 KV cache; pass more to use more) */
  maxSeq?: number;
  /** KV cache storage (default 'f16', as llama.cpp: half the bytes of 'f32' for attention to read, logits within ~1e-3 of it; 'f32' for bit-for-bit comparisons with f32 references) */
  kvCache?: 'f32' | 'f16' | 'i8';
  /** 'cuda': run the forward pass on the GPU (the weights are uploaded after loading; see Model.toDevice). Default 'cpu'. */
  device?: 'cpu' | 'cuda';
  /**
   * sequences decoded together (default 1): concurrent generate() / chat() calls share each
   * forward pass (continuous batching), each in its own KV cache slot; more wait for a free
   * slot. The KV cache holds maxSequences x maxSeq positions (see Model.kvCacheBytes). CPU only.
   */
  maxSequences?: number;
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

/** @internal What a calibration pass records about the linears' inputs (see LlamaCalibration). */
export interface CalibrationStats {
  /** per feature: L2 norm over all tokens; layers x (attention [dim], o [heads * headDim], FFN [dim], down [hidden]) */
  norms: Float64Array;
  /** per feature: max |x| */
  amax: Float32Array;
  /** per (layer, input): min and max */
  lo: Float32Array;
  hi: Float32Array;
  /** per (layer, input): histogram over the given ranges */
  hist?: Float64Array;
  /** X^T X of the four inputs of the requested layer: [dim^2 | (heads * headDim)^2 | dim^2 | hidden^2] */
  gram?: Float64Array;
}

interface NativeModel {
  save(path: string, metadata: string): Promise<void>;
  /** out: a Float32Array of the logits' length, filled and returned instead of a new one */
  forward(tokens: Int32Array, all: boolean, out?: Float32Array): Promise<Float32Array>;
  /** one pass over lengths.length sequences (tokens packed), sequence i in KV slot slots[i]; out: [count * vocab] last logits */
  forwardBatch(tokens: Int32Array, lengths: Int32Array, slots: Int32Array, out: Float32Array): Promise<Float32Array>;
  calibrate(tokens: Int32Array, lengths: Int32Array, ranges: Float32Array | null, bins: number, gramLayer: number): Promise<CalibrationStats>;
  pos(slot?: number): number;
  truncate(n: number, slot?: number): void;
  dispose(): void;
  meta(): { cacheBytes: number; nativeBytes: number };
  toCuda(): Promise<void>;
  deviceBytes(): number;
}

const KV = { f32: 0, f16: 1, i8: 2 } as const;
/** @internal the KV cache storage when LoadModelOptions.kvCache is not given (llama.cpp's default too) */
export const DEFAULT_KV_CACHE = 'f16';
/** The context a model gets unless loadModel is given maxSeq: its own, up to this (llama.cpp's tools default to 4096) */
const DEFAULT_MAX_SEQ = 8192;

/** @internal */
export interface DecodeTiming {
  start(): void;
  /** ms in the sampler, and awaiting forward steps (from the call to the resumed loop) */
  sampleMs: number;
  stepMs: number;
  steps: number;
}

export class Model {
  readonly config: ModelConfig;
  readonly tokenizer: Tokenizer;
  /** what the last generate() did */
  stats: GenerationStats = { promptTokens: 0, promptTokensPerSec: 0, generatedTokens: 0, decodeTokensPerSec: 0 };
  /** @internal timing hooks of `bench e2e` (decode only): called when the prompt is in, then sums per decode step */
  _decodeTiming?: DecodeTiming;
  /** token id that ends generation (llama2.c: BOS, as run.c; other formats: EOS) */
  readonly stopIds: readonly number[];
  /** set on models returned by pruneModel(): what was pruned and the bytes it saved */
  pruneReport?: PruneReport;
  /** set on models returned by quantizeModel(): each linear's format and bytes */
  quantizeReport?: QuantizeReport;
  /** @internal where the weights came from (pruneModel re-reads them in f32) */
  readonly _source: ModelSource;
  /** KV cache slots: generations decoded together (LoadModelOptions.maxSequences) */
  readonly maxSequences: number;
  private native: NativeModel | null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly slots: Slots;
  private readonly batcher: Batcher | null;

  /** @internal */
  constructor(native: NativeModel, config: ModelConfig, tokenizer: Tokenizer, stopIds: number[], source: ModelSource) {
    this.native = native;
    this.config = config;
    this.tokenizer = tokenizer;
    this.stopIds = stopIds;
    this._source = source;
    this.maxSequences = source.opts.maxSequences ?? 1;
    this.slots = new Slots(this.maxSequences);
    const target: BatchTarget = {
      vocab: config.vocab,
      forwardBatch: (t, l, sl, out) => this.serial(() => this.live('generate').forwardBatch(t, l, sl, out)),
    };
    this.batcher = this.maxSequences > 1 ? new Batcher(target, this.maxSequences) : null;
  }

  /** Bytes of the KV cache: maxSequences slots of maxSeq positions (reserved; pages are committed as positions are first written). */
  get kvCacheBytes(): number {
    return this.live('kvCacheBytes').meta().cacheBytes;
  }

  /** Generations running (holding a KV slot) and waiting for one. */
  get activeGenerations(): { running: number; waiting: number } {
    return { running: this.slots.busy, waiting: this.slots.waiting };
  }

  /**
   * @internal Runs each token sequence from an empty context and records the inputs of
   * the linears (per-feature L2 norms and max |x|, per-input ranges and, given their
   * ranges, histograms).
   */
  _calibrate(seqs: readonly (readonly number[])[], opts: { ranges?: Float32Array; bins?: number; gramLayer?: number } = {}): Promise<CalibrationStats> {
    try {
      const lengths = Int32Array.from(seqs.map((s) => s.length));
      const toks = this.checkIds('calibrate', seqs.flat());
      return this.serial(() => this.live('calibrate').calibrate(toks, lengths, opts.ranges ?? null, opts.bins ?? 0, opts.gramLayer ?? -1));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Where the forward pass runs: 'cpu', or 'cuda' after toDevice('cuda'). */
  get device(): 'cpu' | 'cuda' {
    return this.native && this.native.deviceBytes() > 0 ? 'cuda' : 'cpu';
  }

  /** Bytes of GPU memory held (weights, KV cache, activations); 0 on the CPU. */
  get deviceBytes(): number {
    return this.live('deviceBytes').deviceBytes();
  }

  /**
   * Moves the forward pass to the GPU: uploads the weights (f32; int8 and int4 as int8
   * values with their scales; sparse as CSR or N:M) and keeps the KV cache there. The
   * context starts empty. One way: the host copy of the weights stays for save() and
   * for compression, which run on the CPU. Rejects with the reason when no CUDA device
   * is available.
   */
  toDevice(device: 'cpu' | 'cuda'): Promise<void> {
    const op = `Model.toDevice('${String(device)}')`;
    try {
      const dev = parseDevice(op, device);
      const nat = this.live(op);
      if (dev === 'cpu') {
        if (this.device === 'cuda') throw new TypeError(`${op}: a model on cuda stays there; load it again for the CPU`);
        return Promise.resolve();
      }
      return this.serial(() => nat.toCuda());  // a no-op when already there
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Positions in the model's own context: KV slot 0 (forward(), continue, conversations, and generations when it is free). */
  get length(): number {
    return this.live('length').pos();
  }

  /** Native bytes held: the weights (the mapped file's bytes, and what was copied or quantized at load) and the KV cache. */
  get nativeBytes(): number {
    return this.live('nativeBytes').meta().nativeBytes;
  }

  /**
   * Appends tokens to the context (KV slot 0) and returns the logits of the last one
   * (Float32Array(vocab)). A generation running in that slot (continue, a conversation,
   * or any generation while the slot was free) is waited for, in call order, so that
   * neither sees the other's tokens: do not await it inside such a generation's loop.
   */
  forward(ids: readonly number[] | Int32Array): Promise<Float32Array> {
    return this.own('forward', ids, false);
  }

  /** Appends tokens and returns the logits of every one of them (Float32Array(n * vocab)); waits as forward() does. */
  forwardAll(ids: readonly number[] | Int32Array): Promise<Float32Array> {
    return this.own('forwardAll', ids, true);
  }

  /** A step in the model's own context: KV slot 0, held for the call. */
  private async own(op: string, ids: readonly number[] | Int32Array, all: boolean): Promise<Float32Array> {
    const toks = this.checkIds(op, ids);  // copied now: the caller may change ids while this waits
    this.live(op);
    const slot = await this.slots.acquire(0);
    try {
      return await this.serial(() => this.live(op).forward(toks, all));
    } finally {
      this.slots.release(slot);
    }
  }

  private step(op: string, ids: readonly number[] | Int32Array, all: boolean, out?: Float32Array): Promise<Float32Array> {
    try {
      const toks = this.checkIds(op, ids);
      return this.serial(() => this.live(op).forward(toks, all, out));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Empties the context. Throws while a generation runs in it (KV slot 0): leave its loop, or abort it, first. */
  reset(): void {
    const nat = this.live('reset');
    if (this.slots.held(0)) throw new Error('reset: a generation is running in the model\'s context (KV slot 0); leave its loop or abort it first');
    nat.truncate(0);
  }

  /** @internal Keeps the first n positions of the context (a conversation backing up to where a re-rendered turn differs). */
  _truncate(n: number): void {
    this.live('truncate').truncate(n);
  }

  /**
   * Streams generated tokens. A string prompt is encoded with BOS; an id array is used
   * as given. Starts from an empty context unless { continue: true }, which extends the
   * model's own context (KV slot 0, where a generation runs whenever that slot is free). With one KV slot (the default) generations run one at a time,
   * in the order they start: a second waits until the first finishes or its loop is left
   * (break / return). With loadModel(..., { maxSequences: n }) up to n run at once, each
   * in its own slot, and every step decodes all of them in one forward pass; more wait,
   * in order, for a slot to free.
   */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
    return this._generate(prompt, opts, (opts as GenerateOptions | null)?.continue === true);  // null: refused in _generate
  }

  /**
   * @internal own: run in the model's own context (slot 0), as continue and conversations
   * do. prepare (conversations): called once that slot is held, it gives the ids in place
   * of prompt, whether they continue the context, and how much of it to keep first.
   */
  async *_generate(prompt: string | readonly number[], opts: GenerateOptions, own: boolean,
    prepare?: () => { ids: number[]; continue: boolean; keep?: number }): AsyncGenerator<GeneratedToken> {
    const op = 'generate';
    checkOptions(op, opts);
    checkSampling(op, opts);
    if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) throw new TypeError(`${op}: signal must be an AbortSignal; got ${describe(opts.signal)}`);
    const maxTokens = opts.maxTokens ?? 128;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new RangeError(`${op}: maxTokens must be a non-negative integer; got ${describe(maxTokens)}`);
    const stop = opts.stop ?? [];
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0)) throw new TypeError(`${op}: stop must be an array of non-empty strings`);
    const check = (ids: number[]) => {
      if (ids.length === 0) throw new RangeError(`${op}: the prompt has no tokens`);
      this.checkIds(op, ids);
      if (ids.length > this.config.maxSeq) throw new RangeError(`${op}: the prompt (${ids.length} tokens) does not fit maxSeq ${this.config.maxSeq}`);
    };
    let ids = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : [...prompt];
    if (!prepare) check(ids);
    opts.signal?.throwIfAborted();
    this.live(op);
    // a KV slot of its own until it finishes or its loop is left
    const slot = await this.slots.acquire(own ? 0 : -1, opts.signal);
    try {
      opts.signal?.throwIfAborted();
      const nat = this.live(op);
      let cont = opts.continue === true, keep = cont ? nat.pos(slot) : 0;  // stable now: the slot is ours
      if (prepare) {
        const p = prepare();
        ({ ids, continue: cont } = p);
        keep = cont ? p.keep ?? nat.pos(slot) : 0;
        check(ids);
      }
      if (keep + ids.length > this.config.maxSeq) {
        throw new RangeError(`${op}: the prompt (${ids.length} tokens after ${keep} in context) does not fit maxSeq ${this.config.maxSeq}`);
      }
      // in call order: no forward pass runs when the context is cut
      if (keep < nat.pos(slot)) await this.serial(async () => this.live(op).truncate(keep, slot));
      yield* this.run(slot, ids, opts, maxTokens, stop);
    } finally {
      this.slots.release(slot);
    }
  }

  /** The logits of the last of ids, appended to slot's context: alone, or in the next batched step. */
  private advance(slot: number, ids: number[], out: Float32Array): Promise<Float32Array> {
    if (!this.batcher) return this.step('generate', ids, false, out);
    return this.batcher.submit(slot, Int32Array.from(ids), out);
  }

  private async *run(slot: number, ids: number[], opts: GenerateOptions, maxTokens: number, stop: string[]): AsyncGenerator<GeneratedToken> {
    const sampler = new Sampler(opts);
    const stats: GenerationStats = { promptTokens: ids.length, promptTokensPerSec: 0, generatedTokens: 0, decodeTokensPerSec: 0 };
    this.stats = stats;
    const t0 = performance.now();
    // one logits buffer for the whole loop (the sampler is done with it before the
    // next step): no 4 x vocab bytes of garbage per token
    let logits = await this.advance(slot, ids, new Float32Array(this.config.vocab));
    let pos = this.live('generate').pos(slot);
    const t1 = performance.now();
    stats.promptTokensPerSec = ids.length / ((t1 - t0) / 1000);
    const timing = this._decodeTiming;
    timing?.start();
    const dec = new StreamDecoder(this.tokenizer);
    let prev = ids[ids.length - 1]!;
    let text = '', emitted = 0;
    for (let n = 0; n < maxTokens; n++) {
      opts.signal?.throwIfAborted();
      const ts = timing ? performance.now() : 0;
      const id = sampler.sample(logits);
      if (timing) timing.sampleMs += performance.now() - ts;
      if (this.stopIds.includes(id)) {
        // the end token is not yielded, except to carry text held back for a stop string
        const rest = text + dec.flush();
        if (rest.length > emitted) yield { id, text: rest.slice(emitted) };
        break;
      }
      const last = n + 1 === maxTokens || pos >= this.config.maxSeq;
      const piece = dec.push(id, prev) + (last ? dec.flush() : '');
      prev = id;
      stats.generatedTokens++;
      text += piece;
      const hit = stop.find((s) => text.endsWith(s));
      if (hit) {
        // yielded even with no text left before the stop string: every generated token is
        // yielded once (counts of tokens made, such as a server's usage, follow the yields)
        const keep = text.length - hit.length;
        yield { id, text: keep > emitted ? text.slice(emitted, keep) : '' };
        break;
      }
      // hold back text that could be the start of a stop string (not after the last token)
      let hold = 0;
      if (!last) for (const s of stop) for (let l = Math.min(s.length - 1, text.length); l > hold; l--) if (text.endsWith(s.slice(0, l))) { hold = l; break; }
      const out = text.slice(emitted, text.length - hold);
      emitted += out.length;
      yield { id, text: out };
      if (last) break;
      const tf = timing ? performance.now() : 0;
      logits = await this.advance(slot, [id], logits);
      pos++;
      if (timing) {
        timing.stepMs += performance.now() - tf;
        timing.steps++;
      }
      stats.decodeTokensPerSec = stats.generatedTokens / ((performance.now() - t1) / 1000);
    }
    if (stats.generatedTokens > 0 && stats.decodeTokensPerSec === 0) stats.decodeTokensPerSec = stats.generatedTokens / ((performance.now() - t1) / 1000);
  }

  /**
   * Streams the answer to `messages` ([{ role, content }]) from an empty context: the
   * model's chat template (or `opts.template`) renders them with the generation prompt,
   * special tokens are parsed, and generation ends at the end-of-turn token (stopIds).
   */
  chat(messages: readonly ChatMessage[], opts: ChatOptions = {}): AsyncGenerator<GeneratedToken> {
    return chatOnce(this, messages, opts);
  }

  /** A conversation that keeps this model's context between turns (only what a turn adds is prefilled). */
  conversation(opts: ChatOptions = {}): Conversation {
    return new Conversation(this, opts);
  }

  /**
   * Writes the model as it runs (f32, int8 or sparse linears, tokenizer, config) to one
   * safetensors file that loadModel() reads back bit-exactly.
   */
  async save(file: string): Promise<void> {
    if (typeof file !== 'string' || file.length === 0) throw new TypeError(`saveModel: path must be a non-empty string; got ${describe(file)}`);
    const spec = this.tokenizer.toSpec();
    const meta: Record<string, string> = {
      'sparq.format': '1',
      'sparq.config': JSON.stringify({ ...this.config, ropeNeox: this._source.ropeNeox }),
      'sparq.tokenizer': JSON.stringify({ ...spec, pieces: spec.pieces.map((p) => Buffer.from(p).toString('base64')), scores: Array.from(spec.scores) }),
      'sparq.stop': JSON.stringify(this.stopIds),
      ...(this.pruneReport ? { 'sparq.prune': JSON.stringify(this.pruneReport) } : {}),
      ...(this.quantizeReport ? { 'sparq.quantize': JSON.stringify(this.quantizeReport) } : {}),
    };
    const n = this.live('saveModel');
    await this.serial(() => n.save(saveTarget(file), JSON.stringify(meta)));
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

/**
 * Where a save lands: through a symlink to its target, and only over a regular
 * file (the new file is renamed into place, which would replace a device node).
 */
function saveTarget(file: string): string {
  let target = file;
  try {
    target = fs.realpathSync(file);
  } catch {
    return file;  // nothing there yet (or a dangling link: written as a new file)
  }
  const st = fs.statSync(target);
  if (!st.isFile()) throw new TypeError(`saveModel: ${file} exists and is not a regular file`);
  return target;
}

function detect(file: string): 'gguf' | 'hf' | 'llama2c' | 'sparq' {
  const st = fs.statSync(file);
  if (st.isDirectory()) return 'hf';
  regularFileSize(file, 'loadModel');
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(16);
    const got = fs.readSync(fd, head, 0, 16, 0);
    if (head.toString('latin1', 0, 4) === 'GGUF') return 'gguf';
    // a safetensors file written by saveModel: u64 header length, then '{' ... "sparq.format"
    if (got === 16 && head[8] === 0x7b && head.readBigUInt64LE(0) < BigInt(st.size)) {
      const len = Math.min(Number(head.readBigUInt64LE(0)), 100 * 2 ** 20);
      const h = Buffer.alloc(len);
      fs.readSync(fd, h, 0, len, 8);
      if (h.includes('"sparq.format"')) return 'sparq';
    }
    return 'llama2c';
  } finally {
    fs.closeSync(fd);
  }
}

// q | k | v and gate | up are read back to back into one weight each (one GEMV per
// group per token); separate only where a format stores them differently.
/**
 * Writes a model (loaded, quantized or pruned) to one safetensors file - weights as
 * they run, tokenizer and config in the metadata - that loadModel() reads back
 * bit-exactly.
 */
export function saveModel(model: Model, file: string): Promise<void> {
  if (!(model instanceof Model)) return Promise.reject(new TypeError(`saveModel: expected a Model; got ${describe(model)}`));
  return model.save(file);
}

/** @internal */
export interface ModelSource {
  file: string;
  opts: LoadModelOptions;
  /** the weights of a pruned or structurally shrunk model are not the file's */
  derived: boolean;
  ropeNeox: boolean;
}

/** What pruneModel() did, per linear and in total. */
export interface PruneReport {
  method: 'magnitude' | 'wanda';
  pattern: string;
  layers: { name: string; shape: [number, number]; sparsity: number; format: string; bytes: number; denseBytes: number }[];
  /** zeros over all pruned linear weights (of the shrunk shapes, after structured pruning) */
  sparsity: number;
  /** bytes of the pruned linears, and of the same linears stored dense (same value type, original shapes) */
  bytes: number;
  denseBytes: number;
  bytesSaved: number;
  /** structured pruning: sizes before -> after */
  hidden?: [number, number];
  heads?: [number, number];
  kvHeads?: [number, number];
}

/** @internal */
export type WeightRef = { storage: NativeStorage; offset: number; ggml?: number } | NativePacked | NativeSparse | NativeQ4 | NativeLinear;
/** @internal */
export interface LayerRefs {
  attnNorm: WeightRef; ffnNorm: WeightRef; wo: WeightRef; w2: WeightRef;
  wqkv?: WeightRef; wq?: WeightRef; wk?: WeightRef; wv?: WeightRef;
  w13?: WeightRef; w1?: WeightRef; w3?: WeightRef;
  /** f32 biases of q [heads * headDim], k and v [kvHeads * headDim] (Qwen2): all three or none */
  bq?: WeightRef; bk?: WeightRef; bv?: WeightRef;
  /** f32 RMSNorm weights [headDim] of each q and k head (Qwen3): both or none */
  qNorm?: WeightRef; kNorm?: WeightRef;
}
/** @internal The per-layer f32 vectors that are not linears and that compression carries over as they are (biases, q / k norms). */
export const LAYER_EXTRAS = ['bq', 'bk', 'bv', 'qNorm', 'kNorm'] as const;
/** @internal The extras a layer has, to spread into a rebuilt one. */
export function layerExtras(L: LayerRefs): Pick<LayerRefs, (typeof LAYER_EXTRAS)[number]> {
  const o: Pick<LayerRefs, (typeof LAYER_EXTRAS)[number]> = {};
  for (const k of LAYER_EXTRAS) if (L[k]) o[k] = L[k];
  return o;
}
/** @internal */
export interface Plan {
  config: Omit<ModelConfig, 'maxSeq' | 'headDim'> & { maxSeq: number };
  tokenizer: Tokenizer;
  stopIds: number[];
  ropeNeox: boolean;
  /** ropeFreqs: f32 [headDim / 2], RoPE frequency i divided by entry i (Llama 3.1 rope scaling) */
  weights: { embed: WeightRef; finalNorm: WeightRef; output: WeightRef; layers: LayerRefs[]; ropeFreqs?: WeightRef };
  /** features per head when heads x headDim differs from dim (a saved structurally pruned model) */
  headDim?: number;
  /** the file's weights are a pruned / quantized model's (pruneModel and quantizeModel refuse it) */
  derived?: boolean;
  /** native objects to release once the model holds what it needs */
  temp: { dispose(): void }[];
}

/**
 * Reads weights tensor by tensor. The file is memory-mapped once (private,
 * copy-on-write): tensors used as stored (f32 vectors and linears, GGUF blocks)
 * point into the mapping, with no copy and the page cache's pages shared. What
 * is converted is read in chunks, so the peak stays near the model's own size:
 * in int8 mode each f32 linear is quantized per output channel as soon as it
 * arrives and its f32 bytes freed.
 */
class WeightReader {
  private map?: Promise<NativeStorage | null>;
  constructor(private readonly file: string, private readonly int8: boolean, readonly temp: { dispose(): void }[] = []) {}

  /** the whole file, mapped on first use (one mapping per reader); null where it cannot be mapped
   *  (a file system without mmap): everything is then read into native memory instead */
  mapped(): Promise<NativeStorage | null> {
    this.map ??= loadNative().mapFile(this.file).then((s) => this.keep(s), () => null);
    return this.map;
  }

  /** f32 values [count] at a byte offset of the file */
  async f32(offset: number, count: number): Promise<WeightRef> {
    const m = offset % 4 === 0 ? await this.mapped() : null;
    if (m) return { storage: m, offset };
    return { storage: this.keep(await loadNative().readFile(this.file, offset, count * 4)), offset: 0 };
  }

  /** an f32 linear [sum of rows, k] from parts [offset, rows] read back to back (fused q|k|v, gate|up) */
  async linear(parts: [number, number][], k: number): Promise<WeightRef> {
    // int8: quantized natively from the file in chunks of rows (never all of it in f32)
    if (this.int8) return this.keep(await loadNative().quantizeFile(this.file, parts.flat(), k));
    const ranges = parts.flatMap(([o, r]) => [o, r * k * 4]), at = contiguous(ranges);
    const m = at !== null && at % 4 === 0 ? await this.mapped() : null;
    if (m) return { storage: m, offset: at! };
    return { storage: this.keep(await loadNative().readFile(this.file, ranges)), offset: 0 };
  }

  /** F16 / BF16 / Q8_0 values (byte ranges, back to back) widened to f32 [count] */
  async widen(ranges: number[], type: number, count: number): Promise<{ storage: NativeStorage; offset: number }> {
    const at = contiguous(ranges), m = at !== null ? await this.mapped() : null;
    if (m) return { storage: this.keep(await loadNative().widenToF32(m, at!, type, count)), offset: 0 };
    const s = await loadNative().readFile(this.file, ranges);
    try {
      return { storage: this.keep(await loadNative().widenToF32(s, 0, type, count)), offset: 0 };
    } finally {
      s.dispose();
    }
  }

  /** F16 / BF16 linear [n, k] from byte ranges: widened, then quantized in int8 mode */
  async widenLinear(ranges: number[], type: number, n: number, k: number): Promise<WeightRef> {
    const wide = await this.widen(ranges, type, n * k);
    if (!this.int8) return wide;
    try {
      return this.keep(await loadNative().quantizeWeight(wide.storage, 0, n, k, 0, false, false));
    } finally {
      wide.storage.dispose();
    }
  }

  /** Q8_0 blocks of rows (parts [offset, rows], back to back) packed straight into int8 group 32, in chunks */
  async q8(parts: [number, number][], k: number): Promise<WeightRef> {
    return this.keep(await loadNative().packQ8File(this.file, parts.flat(), k));
  }

  /** GGUF blocks of rows (byte ranges, back to back) kept as they are stored: the linear runs on them */
  async blocks(ranges: number[], type: number): Promise<WeightRef> {
    const at = contiguous(ranges), m = at !== null ? await this.mapped() : null;
    if (m) return { storage: m, offset: at!, ggml: type };
    return { storage: this.keep(await loadNative().readFile(this.file, ranges)), offset: 0, ggml: type };
  }

  keep<T extends { dispose(): void }>(x: T): T {
    this.temp.push(x);
    return x;
  }
}

/** The offset where byte ranges [offset, bytes, ...] start when they lie back to back in the file, else null. */
function contiguous(ranges: number[]): number | null {
  for (let i = 2; i < ranges.length; i += 2) if (ranges[i]! !== ranges[i - 2]! + ranges[i - 1]!) return null;
  return ranges[0]!;
}
/** Whether tensors (fused parts) lie back to back in their file: used in place (mapped), only such parts are fused. */
function backToBack(ts: { offset: number; bytes: number }[]): boolean {
  return contiguous(ts.flatMap((t) => [t.offset, t.bytes])) !== null;
}

interface LayerNames { attnNorm: string; ffnNorm: string; q: string; k: string; v: string; o: string; gate: string; up: string; down: string }

/** One layer's weights by tensor name (GGUF, HF): q|k|v and gate|up fused where `fusable` allows. */
async function layerRefs(n: LayerNames, dim: number, qd: number, kvd: number, hidden: number, vec: (name: string) => Promise<WeightRef>,
                         lin: (names: string[], rows: number[], k: number) => Promise<WeightRef>, fusable: (names: string[]) => boolean): Promise<LayerRefs> {
  const layer: LayerRefs = {
    attnNorm: await vec(n.attnNorm), ffnNorm: await vec(n.ffnNorm), wo: await lin([n.o], [dim], qd), w2: await lin([n.down], [dim], hidden),
  };
  if (fusable([n.q, n.k, n.v])) layer.wqkv = await lin([n.q, n.k, n.v], [qd, kvd, kvd], dim);
  else [layer.wq, layer.wk, layer.wv] = [await lin([n.q], [qd], dim), await lin([n.k], [kvd], dim), await lin([n.v], [kvd], dim)];
  if (fusable([n.gate, n.up])) layer.w13 = await lin([n.gate, n.up], [hidden, hidden], dim);
  else [layer.w1, layer.w3] = [await lin([n.gate], [hidden], dim), await lin([n.up], [hidden], dim)];
  return layer;
}

async function planLlama2c(file: string, opts: LoadModelOptions): Promise<Plan> {
  const parsed: ParsedModel = parseLlama2c(file);
  const tokPath = opts.tokenizer ?? path.join(path.dirname(file), 'tokenizer.bin');
  if (!fs.existsSync(tokPath)) throw new Error(`loadModel: llama2.c checkpoints need a tokenizer: pass { tokenizer: 'path/to/tokenizer.bin' } (${tokPath} does not exist)`);
  const tokBytes = readBoundedFile(tokPath, 'loadModel', 'tokenizer');
  let tokenizer: Tokenizer;
  try {
    tokenizer = Tokenizer.fromLlama2c(tokBytes, parsed.config.vocab);
  } catch (e) {
    throw new (e instanceof RangeError ? RangeError : Error)(`loadModel: ${tokPath}: ${(e as Error).message}`);
  }
  const { dim, hidden, vocab, kvHeads, heads } = parsed.config;
  const kvd = (kvHeads * dim) / heads;
  const r = new WeightReader(file, opts.weights === 'int8');
  const w = parsed.weights;
  const layers: LayerRefs[] = [];
  // f32 linears are used in place (mapped), so q|k|v and gate|up, which are not
  // adjacent in this layout, stay apart; int8 ones are converted, so fused
  const fuse = opts.weights === 'int8';
  for (const l of w.layers) {
    const L: LayerRefs = {
      attnNorm: await r.f32(l.attnNorm, dim), ffnNorm: await r.f32(l.ffnNorm, dim),
      wo: await r.linear([[l.wo, dim]], dim), w2: await r.linear([[l.w2, dim]], hidden),
    };
    if (fuse) [L.wqkv, L.w13] = [await r.linear([[l.wq, dim], [l.wk, kvd], [l.wv, kvd]], dim), await r.linear([[l.w1, hidden], [l.w3, hidden]], dim)];
    else [L.wq, L.wk, L.wv, L.w1, L.w3] = [await r.linear([[l.wq, dim]], dim), await r.linear([[l.wk, kvd]], dim), await r.linear([[l.wv, kvd]], dim),
      await r.linear([[l.w1, hidden]], dim), await r.linear([[l.w3, hidden]], dim)];
    layers.push(L);
  }
  const embed = await r.f32(w.embed, vocab * dim);
  return {
    config: parsed.config, tokenizer, stopIds: [tokenizer.bos], ropeNeox: false, temp: r.temp,
    weights: {
      embed, finalNorm: await r.f32(w.finalNorm, dim),
      // a tied classifier is the embedding itself (f32), or its int8 copy
      output: parsed.config.tiedEmbeddings && opts.weights !== 'int8' ? embed : await r.linear([[w.output, vocab]], dim),
      layers,
    },
  };
}

/** A file written by saveModel(): config and tokenizer from the metadata, each linear as it was saved. */
async function planSparq(file: string, int8: boolean, widenBlocks = false): Promise<Plan> {
  const { tensors, metadata } = readSafetensorsFile(file);
  const bad = (why: string): never => { throw new RangeError(`loadModel: ${file}: ${why}`); };
  // a JSON object (or array) from the metadata; anything else (null, a number) is an error
  const json = <T>(key: string, array = false): T => {
    const v = metadata[key];
    if (v === undefined) return bad(`metadata ${key} is missing`);
    let o: unknown;
    try { o = JSON.parse(v); } catch { return bad(`metadata ${key} is not JSON`); }
    if (array ? !Array.isArray(o) : typeof o !== 'object' || o === null || Array.isArray(o)) bad(`metadata ${key} must be a JSON ${array ? 'array' : 'object'}`);
    return o as T;
  };
  if (metadata['sparq.format'] !== '1') bad(`sparq.format ${String(metadata['sparq.format'])} is not supported (this version reads 1)`);
  const cfg = json<ModelConfig & { ropeNeox: boolean }>('sparq.config');
  const ints = ['dim', 'hidden', 'layers', 'heads', 'kvHeads', 'headDim', 'vocab', 'maxSeq'] as const;
  for (const k of ints) if (!Number.isInteger(cfg[k]) || cfg[k] < 1 || cfg[k] > 2 ** 24) bad(`config.${k} must be an integer in [1, 2^24]`);
  if (cfg.heads % cfg.kvHeads) bad('config.heads must be a multiple of kvHeads');
  const arch: ModelArch = cfg.arch === undefined ? 'llama' : ['llama', 'qwen2', 'qwen3'].includes(cfg.arch) ? cfg.arch : bad(`config.arch '${String(cfg.arch)}' is not supported`);
  const tk = json<{ pieces: string[]; scores: number[]; bos: number; eos: number; addSpacePrefix: boolean; prefixUnlessSpace?: boolean } & Pick<TokenizerSpec, 'kind' | 'merges' | 'pre' | 'ignoreMerges' | 'nfc' | 'special' | 'userDefined' | 'addBos' | 'chatTemplate'>>('sparq.tokenizer');
  if (!Array.isArray(tk.pieces) || tk.pieces.length !== cfg.vocab || !Array.isArray(tk.scores) || tk.scores.length !== cfg.vocab) bad('the tokenizer does not match the vocabulary');
  for (const id of [tk.bos, tk.eos]) if (!Number.isInteger(id) || id < 0 || id >= cfg.vocab) bad('tokenizer bos / eos are outside the vocabulary');
  const spec: TokenizerSpec = { pieces: tk.pieces.map((p) => new Uint8Array(Buffer.from(String(p), 'base64'))), scores: tk.scores.map(Number), bos: tk.bos, eos: tk.eos, addSpacePrefix: tk.addSpacePrefix !== false,
    ...(tk.prefixUnlessSpace === true ? { prefixUnlessSpace: true } : {}) };
  if (tk.chatTemplate !== undefined) spec.chatTemplate = typeof tk.chatTemplate === 'string' ? tk.chatTemplate : bad('the chat template is not a string');
  if (tk.kind === 'bpe') {
    // a byte-level vocabulary: its merges, pre-tokenizer and special tokens as saved
    if (!Array.isArray(tk.merges) || tk.merges.some((m) => typeof m !== 'string') || typeof tk.pre !== 'string') bad('the byte-level tokenizer has no merges / pre-tokenizer');
    if (!Array.isArray(tk.special) || tk.special.some((id) => !Number.isInteger(id) || id < 0 || id >= cfg.vocab)) bad('the byte-level tokenizer lists special tokens outside the vocabulary');
    const user = Array.isArray(tk.userDefined) ? tk.userDefined : [];
    Object.assign(spec, { kind: 'bpe', merges: tk.merges, pre: tk.pre, ignoreMerges: tk.ignoreMerges === true, nfc: tk.nfc === true, special: tk.special, userDefined: user, addBos: tk.addBos !== false });
  }
  const stop = json<number[]>('sparq.stop', true);
  if (!Array.isArray(stop) || stop.some((id) => !Number.isInteger(id) || id < 0 || id >= cfg.vocab)) bad('sparq.stop must list token ids of the vocabulary');
  const linears = json<Record<string, { kind: string; type?: number; group?: number; actScale?: number; asymmetric?: boolean; format?: string; int8?: boolean; N?: number; M?: number; nnz?: number } | boolean>>('sparq.linears');
  const r = new WeightReader(file, int8);
  const T = (name: string, dtype: string, shape: number[]): SafetensorsEntry => {
    const t = tensors.get(name) ?? bad(`tensor ${name} is missing`);
    if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) bad(`tensor ${name} is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`);
    return t;
  };
  const f32 = (name: string, shape: number[]) => r.f32(T(name, 'F32', shape).offset, shape.reduce((a, b) => a * b, 1));
  const nat = loadNative();
  const formats = new Map(nat.linearFormats().map((f) => [f.name, f.loads]));
  const lin = async (name: string, n: number, k: number): Promise<WeightRef> => {
    const d = linears[name];
    if (typeof d !== 'object' || d === null) return bad(`sparq.linears has no entry for ${name}`);
    if (d.kind === 'f32') return r.linear([[T(`${name}.weight`, 'F32', [n, k]).offset, n]], k);
    if (d.kind === 'ggml') {
      const t = ggmlTypes().get(d.type ?? -1);
      if (!t?.quantized || k % t.block !== 0) return bad(`${name}: bad GGUF block type ${String(d.type)}`);
      const bt = T(`${name}.blocks`, 'U8', [n, (k / t.block) * t.bytes]);
      if (widenBlocks) return r.widen([bt.offset, bt.bytes], t.type, n * k);  // pruneModel / quantizeModel re-read f32
      return r.blocks([bt.offset, bt.bytes], t.type);
    }
    if (formats.get(d.kind)) {  // a format the native table loads from its tensors (int8, int4, sparse)
      // read, not mapped: the tensors are converted, and the mapping's pages would stay resident
      const parts: SavedPart[] = [];
      try {
        for (const [tn, t] of tensors) {
          if (!tn.startsWith(name + '.')) continue;
          const storage = await nat.readFile(file, t.offset, Math.max(t.bytes, 1));
          parts.push({ suffix: tn.slice(name.length + 1), dtype: t.dtype, shape: t.shape, storage, offset: 0, bytes: t.bytes });
        }
        return r.keep(await nat.loadLinear(d, name, n, k, parts));
      } finally {
        for (const p of parts) p.storage.dispose();
      }
    }
    return bad(`${name}: unknown kind ${String(d.kind)}`);
  };
  const { dim, hidden, vocab } = cfg;
  const hd = cfg.headDim, qd = cfg.heads * hd, kvd = cfg.kvHeads * hd;
  const embedEntry = linears.embed;  // an embedding kept in GGUF blocks
  const embed = typeof embedEntry === 'object' && embedEntry?.kind === 'ggml' ? await lin('embed', vocab, dim) : await f32('embed', [vocab, dim]);
  const layers: LayerRefs[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const p = `layers.${l}.`;
    const L: LayerRefs = {
      attnNorm: await f32(p + 'attn_norm', [dim]), ffnNorm: await f32(p + 'ffn_norm', [dim]),
      wo: await lin(p + 'wo', dim, qd), w2: await lin(p + 'w2', dim, hidden),
    };
    if (linears[p + 'wqkv'] !== undefined) L.wqkv = await lin(p + 'wqkv', qd + 2 * kvd, dim);
    else [L.wq, L.wk, L.wv] = [await lin(p + 'wq', qd, dim), await lin(p + 'wk', kvd, dim), await lin(p + 'wv', kvd, dim)];
    if (linears[p + 'w13'] !== undefined) L.w13 = await lin(p + 'w13', 2 * hidden, dim);
    else [L.w1, L.w3] = [await lin(p + 'w1', hidden, dim), await lin(p + 'w3', hidden, dim)];
    await layerExtrasFrom(L, { bq: [p + 'bq', qd], bk: [p + 'bk', kvd], bv: [p + 'bv', kvd], qNorm: [p + 'q_norm', hd], kNorm: [p + 'k_norm', hd] },
      (nm) => tensors.has(nm), (nm, n) => f32(nm, [n]), arch, `loadModel: ${file}`);
    layers.push(L);
  }
  const tied = linears.tied === true;  // the classifier is the f32 embedding itself (not written twice)
  const { ropeNeox, headDim: _hd, ...config } = cfg;
  void _hd;
  return {
    config: { ...config, arch, tiedEmbeddings: config.tiedEmbeddings === true }, tokenizer: new Tokenizer(spec), stopIds: stop, ropeNeox: ropeNeox === true, temp: r.temp,
    weights: { embed, finalNorm: await f32('final_norm', [dim]), layers, output: tied ? (int8 && 'storage' in embed && !embed.ggml ? await r.linear([[T('embed', 'F32', [vocab, dim]).offset, vocab]], dim) : embed) : await lin('output', vocab, dim),
      ...(tensors.has('rope_freqs') ? { ropeFreqs: await f32('rope_freqs', [hd >> 1]) } : {}) },
    headDim: hd, derived: Boolean(metadata['sparq.prune'] || metadata['sparq.quantize']),
  };
}

/** widenBlocks: quantized GGUF linears widened to f32 (exactly) instead of kept in their blocks (pruneModel / quantizeModel re-read them so). */
async function planGguf(file: string, int8: boolean, widenBlocks = false): Promise<Plan> {
  const g = readGguf(file);
  const bad = (why: string): never => { throw new RangeError(`loadModel: ${file}: ${why}`); };
  const archName = g.meta.get('general.architecture');
  if (archName !== 'llama' && archName !== 'qwen2' && archName !== 'qwen3') bad(`architecture '${String(archName)}' is not supported (sparq runs llama, qwen2, qwen3)`);
  const arch = archName as ModelArch;
  const num = (k: string, dflt?: number): number => {
    const v = g.meta.get(`${arch}.${k}`);
    if (v === undefined) return dflt ?? bad(`metadata ${arch}.${k} is missing`);
    const n = Number(v);
    if (!Number.isFinite(n)) bad(`metadata ${arch}.${k} is not a number`);
    return n;
  };
  const dim = num('embedding_length'), layers = num('block_count'), hidden = num('feed_forward_length'), heads = num('attention.head_count');
  // f32 metadata: report the shortest decimal that rounds to the stored value (1e-5, not 9.99999974e-6)
  const short = (v: number) => { for (let p = 1; p < 10; p++) { const r = Number(v.toPrecision(p)); if (Math.fround(r) === Math.fround(v)) return r; } return v; };
  const kvHeads = num('attention.head_count_kv', heads), maxSeq = num('context_length'), normEps = short(num('attention.layer_norm_rms_epsilon', 1e-5));
  const ropeTheta = short(num('rope.freq_base', 10000));
  const tokModel = g.meta.get('tokenizer.ggml.model');
  if (tokModel !== 'llama' && tokModel !== 'gpt2') bad(`tokenizer '${String(tokModel)}' is not supported (SentencePiece 'llama' or byte-level BPE 'gpt2')`);
  const toks = g.meta.get('tokenizer.ggml.tokens'), scores = g.meta.get('tokenizer.ggml.scores');
  if (!Array.isArray(toks) || toks.some((t) => typeof t !== 'string')) return bad('tokenizer.ggml.tokens is missing');
  const vocab = toks.length;
  const id = (k: string, d: number) => { const v = Number(g.meta.get(k) ?? d); if (!Number.isInteger(v) || v < 0 || v >= vocab) bad(`${k} = ${v} is outside the vocabulary`); return v; };
  const bos = id('tokenizer.ggml.bos_token_id', 1), eos = id('tokenizer.ggml.eos_token_id', 2);
  let tokenizer: Tokenizer;
  const stopIds = [eos];
  const ct = g.meta.get('tokenizer.chat_template'), chatTemplate = typeof ct === 'string' ? ct : undefined;
  if (tokModel === 'gpt2') {
    // byte-level BPE: control (3) and user-defined (4) tokens are special; end-of-turn ids stop generation too
    const merges = g.meta.get('tokenizer.ggml.merges'), types = g.meta.get('tokenizer.ggml.token_type'), pre = g.meta.get('tokenizer.ggml.pre') ?? bad('tokenizer.ggml.pre is missing (the byte-level pre-tokenizer: llama-bpe, qwen2, gpt2)');
    if (!Array.isArray(merges) || merges.some((m) => typeof m !== 'string')) bad('tokenizer.ggml.merges is missing');
    if (typeof pre !== 'string') bad('tokenizer.ggml.pre is not a string');
    const special: number[] = [], userDefined: number[] = [];
    if (Array.isArray(types)) types.forEach((t, i) => { if (t === 3 || t === 4) special.push(i); if (t === 4) userDefined.push(i); });
    const addBos = g.meta.get('tokenizer.ggml.add_bos_token');
    for (const k of ['tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) if (g.meta.has(k)) { const e = id(k, eos); if (!stopIds.includes(e)) stopIds.push(e); }
    try {
      tokenizer = Tokenizer.fromByteLevel(toks as string[], { bos, eos, merges: merges as string[], pre: pre as string, special, userDefined, addBos: typeof addBos === 'boolean' ? addBos : pre === 'llama-bpe', chatTemplate });
    } catch (e) {
      return bad((e as Error).message);
    }
  } else {
    const sc = Array.isArray(scores) && scores.length === vocab ? scores.map(Number) : new Array<number>(vocab).fill(0);
    tokenizer = new Tokenizer({
      pieces: packTextPieces(toks as string[]), scores: sc, bos, eos,
      addSpacePrefix: g.meta.get('tokenizer.ggml.add_space_prefix') !== false, chatTemplate,
    });
  }
  const r = new WeightReader(file, int8);
  const tensor = (name: string, n: number, k: number) => {
    const t = g.tensors.get(name) ?? bad(`tensor ${name} is missing`);
    const want = n === 1 ? [k] : [k, n];
    if (t.dims.length !== want.length || t.dims.some((d, i) => d !== want[i])) bad(`tensor ${name} has shape [${t.dims.join(', ')}], expected [${want.join(', ')}] (ggml order)`);
    if (!ggmlTypes().has(t.type)) bad(`tensor ${name} is ${ggmlTypeName(t.type)}; sparq reads ${[...ggmlTypes().values()].map((x) => x.name).join(', ')}`);
    return t;
  };
  const f32 = async (name: string, n: number, k: number): Promise<WeightRef> => {
    const t = tensor(name, n, k);
    return t.type === GGML_F32 ? r.f32(t.offset, n * k) : r.widen([t.offset, t.bytes], t.type, n * k);
  };
  // one linear from tensors of the same type stored back to back in the weight (rows of each, in order)
  const lin = async (names: string[], ns: number[], k: number): Promise<WeightRef> => {
    const ts = names.map((nm, i) => tensor(nm, ns[i]!, k));
    const n = ns.reduce((a, b) => a + b, 0), type = ts[0]!.type;
    if (type === GGML_Q8_0 && widenBlocks) return r.q8(ts.map((t, i) => [t.offset, ns[i]!] as [number, number]), k);
    if (type === GGML_F32) return r.linear(ts.map((t, i) => [t.offset, ns[i]!] as [number, number]), k);
    if (ggmlTypes().get(type)!.quantized && !widenBlocks) return r.blocks(ts.flatMap((t) => [t.offset, t.bytes]), type);
    return r.widenLinear(ts.flatMap((t) => [t.offset, t.bytes]), type, n, k);
  };
  // fused when of one type, and, for tensors used in place (mapped), back to back in the file
  const inPlace = (type: number) => (type === GGML_F32 && !int8) || (ggmlTypes().get(type)?.quantized === true && !widenBlocks);
  const fusable = (names: string[]) => {
    const ts = names.map((nm) => g.tensors.get(nm));
    if (ts.some((t) => !t || t.type !== ts[0]!.type)) return false;  // a missing part is reported when it is read
    return !inPlace(ts[0]!.type) || backToBack(ts as { offset: number; bytes: number }[]);
  };
  // the head size: attention.key_length where given (Qwen3: 128 with dim 1024 and 16 heads), else dim / heads
  const hd = num('attention.key_length', dim / heads), kvd = kvHeads * hd, qd = heads * hd;
  if (!Number.isInteger(hd) || hd < 1 || heads % kvHeads !== 0) bad(`heads (${heads}) must divide dim (${dim}) (or attention.key_length be given) and be a multiple of kv heads (${kvHeads})`);
  if (num('attention.value_length', hd) !== hd) bad('attention.value_length differs from attention.key_length (sparq runs equal key and value heads)');
  // RoPE scaling: Llama 3.1's per-frequency factors come as the rope_freqs tensor; linear scaling as metadata
  const scaling = g.meta.get(`${arch}.rope.scaling.type`);
  let ropeFreqs: WeightRef | undefined, ropeScaling: ModelConfig['ropeScaling'];
  if (g.tensors.has('rope_freqs.weight')) {
    ropeFreqs = await f32('rope_freqs.weight', 1, hd >> 1);
    const factor = num('rope.scaling.factor', 0);
    ropeScaling = { type: 'llama3', ...(factor > 0 ? { factor } : {}) };
  } else if (scaling === 'linear') {
    const factor = num('rope.scaling.factor');
    if (!(factor > 0)) bad(`${arch}.rope.scaling.factor must be > 0`);
    if (factor !== 1) [ropeFreqs, ropeScaling] = [vectorRef(new Float32Array(hd >> 1).fill(factor), r.temp), { type: 'linear', factor }];
  } else if (scaling !== undefined && scaling !== 'none') {
    bad(`rope scaling '${String(scaling)}' is not supported (linear, or Llama 3.1's rope_freqs)`);
  }
  const tied = !g.tensors.has('output.weight');
  // a quantized embedding stays in its blocks (rows dequantized on lookup), and is the tied classifier as it is
  const et = g.tensors.get('token_embd.weight') ?? bad('tensor token_embd.weight is missing');
  const embedBlocks = ggmlTypes().get(et.type)?.quantized === true && !widenBlocks;
  const embed = embedBlocks ? await r.blocks([tensor('token_embd.weight', vocab, dim).offset, et.bytes], et.type) : await f32('token_embd.weight', vocab, dim);
  const L: LayerRefs[] = [];
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}.`;
    const layer = await layerRefs({
      attnNorm: b + 'attn_norm.weight', ffnNorm: b + 'ffn_norm.weight', q: b + 'attn_q.weight', k: b + 'attn_k.weight', v: b + 'attn_v.weight',
      o: b + 'attn_output.weight', gate: b + 'ffn_gate.weight', up: b + 'ffn_up.weight', down: b + 'ffn_down.weight',
    }, dim, qd, kvd, hidden, (nm) => f32(nm, 1, dim), lin, fusable);
    await layerExtrasFrom(layer, {
      bq: [b + 'attn_q.bias', qd], bk: [b + 'attn_k.bias', kvd], bv: [b + 'attn_v.bias', kvd], qNorm: [b + 'attn_q_norm.weight', hd], kNorm: [b + 'attn_k_norm.weight', hd],
    }, (nm) => g.tensors.has(nm), (nm, n) => f32(nm, 1, n), arch, `loadModel: ${file}`);
    L.push(layer);
  }
  return {
    config: { arch, dim, hidden, layers, heads, kvHeads, vocab, maxSeq, ropeTheta, normEps, tiedEmbeddings: tied, ...(ropeScaling ? { ropeScaling } : {}) },
    // llama.cpp's converter permutes Llama's q / k rows into interleaved pairs; Qwen's stay half-split (NeoX RoPE)
    tokenizer, stopIds, ropeNeox: arch !== 'llama', temp: r.temp, headDim: hd,
    weights: {
      ...(ropeFreqs ? { ropeFreqs } : {}),
      embed, finalNorm: await f32('output_norm.weight', 1, dim), layers: L,
      // tied: the embedding's own blocks, the f32 embedding, or an int8 copy (int8 mode, or a widened quantized embedding)
      output: tied ? (embedBlocks ? embed : int8 || ggmlTypes().get(et.type)!.quantized ? await lin(['token_embd.weight'], [vocab], dim) : embed) : await lin(['output.weight'], [vocab], dim),
    },
  };
}

async function planHf(dir: string, int8: boolean): Promise<Plan> {
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

/** An f32 vector of JS memory as a weight (its storage released with the plan's temp). */
function vectorRef(a: Float32Array, temp: { dispose(): void }[]): WeightRef {
  const t = Tensor.from(a, [a.length]);
  temp.push(t);
  return { storage: t._storage, offset: t._offset };
}

/**
 * A layer's f32 extras by tensor name, where the file has them: q / k / v biases (all three)
 * and q / k head norms (both). Qwen2 requires the biases and Qwen3 the norms, as llama.cpp does.
 */
async function layerExtrasFrom(L: LayerRefs, names: Record<(typeof LAYER_EXTRAS)[number], [string, number]>, has: (name: string) => boolean,
                               vec: (name: string, n: number) => Promise<WeightRef>, arch: ModelArch, where: string): Promise<void> {
  const groups: [(typeof LAYER_EXTRAS)[number][], ModelArch, string][] = [[['bq', 'bk', 'bv'], 'qwen2', 'q / k / v biases'], [['qNorm', 'kNorm'], 'qwen3', 'q / k norms']];
  for (const [keys, needs, what] of groups) {
    const got = keys.filter((k) => has(names[k][0]));
    if (got.length === 0 && arch !== needs) continue;
    if (got.length !== keys.length) throw new RangeError(`${where}: tensor ${names[keys.find((k) => !got.includes(k))!][0]} is missing (${arch} layers have ${what})`);
    for (const k of keys) L[k] = await vec(names[k][0], names[k][1]);
  }
}

/**
 * Loads a Llama-family model: a llama2.c checkpoint (+ tokenizer.bin) or a GGUF v3
 * `llama` file (F32 / F16 / Q8_0 tensors; Q8_0 runs through the int8 path as it is), or a
 * Hugging Face folder (config.json, *.safetensors in F32 / F16 / BF16, tokenizer.json).
 */
export async function loadModel(file: string, opts: LoadModelOptions = {}): Promise<Model> {
  checkOptions('loadModel', opts);
  const op = 'loadModel';
  if (typeof file !== 'string') throw new TypeError(`${op}: path must be a string; got ${describe(file)}`);
  if (!fs.existsSync(file)) throw new Error(`${op}: ${file} does not exist`);
  const weights = opts.weights ?? 'f32';
  if (weights !== 'f32' && weights !== 'int8') throw new TypeError(`${op}: weights must be 'f32' or 'int8'; got ${describe(weights)}`);
  const kv = opts.kvCache ?? DEFAULT_KV_CACHE;
  if (!(kv in KV)) throw new TypeError(`${op}: kvCache must be 'f32', 'f16' or 'i8'; got ${describe(kv)}`);
  if (opts.maxSeq !== undefined && (!Number.isInteger(opts.maxSeq) || opts.maxSeq < 1 || opts.maxSeq > 2 ** 24)) {
    throw new RangeError(`${op}: maxSeq must be an integer in [1, 2^24]; got ${describe(opts.maxSeq)}`);
  }
  const device = parseDevice(op, opts.device ?? 'cpu');
  if (opts.maxSequences !== undefined && (!Number.isInteger(opts.maxSequences) || opts.maxSequences < 1 || opts.maxSequences > 4096)) {
    throw new RangeError(`${op}: maxSequences must be an integer in [1, 4096]; got ${describe(opts.maxSequences)}`);
  }
  if (device === 'cuda' && (opts.maxSequences ?? 1) > 1) throw new TypeError(`${op}: maxSequences > 1 (batched decode) runs on the CPU; load with device 'cpu' or one sequence`);
  let model: Model;
  try {
    const plan = await planModel(file, opts);
    try {
      model = await createFromPlan(plan, opts.maxSeq ?? Math.min(plan.config.maxSeq, DEFAULT_MAX_SEQ), kv, { file, opts, derived: plan.derived ?? false, ropeNeox: plan.ropeNeox });
    } finally {
      // the model holds its own references to what it keeps
      for (const t of plan.temp) t.dispose();
    }
  } catch (e) {
    // every loader error names the file it came from
    if (e instanceof Error && !e.message.startsWith('loadModel: ')) {
      const E = e instanceof RangeError ? RangeError : e instanceof TypeError ? TypeError : Error;
      throw new E(`loadModel: ${file}: ${e.message}`);
    }
    throw e;
  }
  if (device === 'cuda') {
    try {
      await model.toDevice('cuda');
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  return model;
}

/** @internal The weights of a model file (native memory; plan.temp to dispose once used). */
export async function planModel(file: string, opts: LoadModelOptions, widenBlocks = false): Promise<Plan> {
  const format = detect(file);
  const int8 = opts.weights === 'int8';
  if (format === 'sparq') return planSparq(file, int8, widenBlocks);
  return format === 'gguf' ? await planGguf(file, int8, widenBlocks) : format === 'hf' ? await planHf(file, int8) : await planLlama2c(file, opts);
}

/** @internal A model over a plan's weights (config.headDim set when heads were pruned). */
export async function createFromPlan(plan: Plan, maxSeq: number, kv: keyof typeof KV, source: ModelSource, headDim?: number): Promise<Model> {
  const hd = headDim ?? plan.headDim ?? plan.config.dim / plan.config.heads;
  const config: ModelConfig = { ...plan.config, maxSeq, headDim: hd };
  const native = await loadNative().createModel(
    { dim: config.dim, hidden: config.hidden, layers: config.layers, heads: config.heads, kvHeads: config.kvHeads, vocab: config.vocab,
      maxSeq, ropeTheta: config.ropeTheta, normEps: config.normEps, ropeNeox: plan.ropeNeox, kvType: KV[kv], headDim: hd,
      maxSequences: source.opts.maxSequences ?? 1 },
    plan.weights) as NativeModel;
  return new Model(native, config, plan.tokenizer, plan.stopIds, source);
}
