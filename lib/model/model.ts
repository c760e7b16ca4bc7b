// model.ts - loadModel() and the Model class: file format detection, weights
// into native memory (read once; the format loaders are load_*.ts), the native
// forward pass, and generation (the decode loop is generate.ts; saving, save.ts).
import * as fs from 'node:fs';
import { checkOptions, describe } from '../errors';
import { loadNative } from '../native';
import { regularFileSize } from './files';
import type { QuantizeReport } from './quantize_model';
import { checkSampling, type SamplingOptions } from './sampler';
import type { Tokenizer } from './tokenizer';
import { Conversation, chat as chatOnce, type ChatMessage, type ChatOptions } from './chat';
import { Batcher, Slots, type BatchTarget } from './batch';
import { parseDevice } from '../tensor';
import { decode } from './generate';
import { saveMetadata, saveTarget } from './save';
import type { Plan } from './load_plan';
import { planLlama2c } from './load_llama2c';
import { planSparq } from './load_sparq';
import { planGguf } from './load_gguf';
import { planHf } from './load_hf';

export { LAYER_EXTRAS, layerExtras, type LayerRefs, type Plan, type WeightRef } from './load_plan';

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
const SLOT0_BUSY = 'a generation is running in the model\'s context (KV slot 0); leave its loop or abort it first';

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
   * (Float32Array(vocab)). Rejects while a generation runs in that slot (continue, a
   * conversation, or any generation that found it free), which would see these tokens
   * in its context: leave its loop, or abort it, first. Calls run in call order.
   */
  forward(ids: readonly number[] | Int32Array): Promise<Float32Array> {
    return this.own('forward', ids, false);
  }

  /** Appends tokens and returns the logits of every one of them (Float32Array(n * vocab)); as forward(). */
  forwardAll(ids: readonly number[] | Int32Array): Promise<Float32Array> {
    return this.own('forwardAll', ids, true);
  }

  /** A step in the model's own context (KV slot 0), refused while a generation holds it. */
  private own(op: string, ids: readonly number[] | Int32Array, all: boolean): Promise<Float32Array> {
    if (this.slots.held(0)) return Promise.reject(new Error(`${op}: ${SLOT0_BUSY}`));
    return this.step(op, ids, all);
  }

  private step(op: string, ids: readonly number[] | Int32Array, all: boolean, out?: Float32Array): Promise<Float32Array> {
    try {
      const toks = this.checkIds(op, ids);
      return this.serial(() => this.live(op).forward(toks, all, out));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Empties the context. Throws while a generation runs in it (KV slot 0), as forward() rejects. */
  reset(): void {
    const nat = this.live('reset');
    if (this.slots.held(0)) throw new Error(`reset: ${SLOT0_BUSY}`);
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
      // forward() calls made before this one finish first: the context is then stable
      // (forward() refuses to run while the slot is held)
      if (slot === 0) await this.serial(async () => undefined);
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
      const seq = { advance: (t: number[], out: Float32Array) => this.advance(slot, t, out), pos: () => this.live(op).pos(slot) };
      yield* decode(this, seq, ids, opts, maxTokens, stop);
    } finally {
      this.slots.release(slot);
    }
  }

  /** The logits of the last of ids, appended to slot's context: alone, or in the next batched step. */
  private advance(slot: number, ids: number[], out: Float32Array): Promise<Float32Array> {
    if (!this.batcher) return this.step('generate', ids, false, out);
    return this.batcher.submit(slot, Int32Array.from(ids), out);
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
    const meta = saveMetadata(this);
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
