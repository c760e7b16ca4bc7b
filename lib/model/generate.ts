// generate.ts - the decode loop of Model.generate(): prompt prefill, sampling, the
// streamed text (UTF-8 pieces, text held back for stop strings), stop conditions,
// statistics and the timing hooks of `bench e2e`.
import { Sampler } from './sampler';
import { StreamDecoder, type Tokenizer } from './tokenizer';
import type { DecodeTiming, GenerateOptions, GeneratedToken, GenerationStats } from './model';

/** What the loop reads of the model (a Model), and its stats, which it sets to this generation's. */
export interface DecodeModel {
  readonly config: { readonly vocab: number; readonly maxSeq: number };
  readonly tokenizer: Tokenizer;
  readonly stopIds: readonly number[];
  stats: GenerationStats;
  readonly _decodeTiming?: DecodeTiming;
}

/** The generation's KV slot, held for the loop. */
export interface DecodeSlot {
  /** the logits of the last of ids, appended to the slot's context (written to out) */
  advance(ids: number[], out: Float32Array): Promise<Float32Array>;
  /** positions in the slot's context */
  pos(): number;
}

/** Generates from ids (prefilled into the slot first) until maxTokens, a stop id, a stop string, maxSeq or the signal. */
export async function* decode(model: DecodeModel, seq: DecodeSlot, ids: number[], opts: GenerateOptions, maxTokens: number, stop: string[]): AsyncGenerator<GeneratedToken> {
  const sampler = new Sampler(opts);
  const stats: GenerationStats = { promptTokens: ids.length, promptTokensPerSec: 0, generatedTokens: 0, decodeTokensPerSec: 0 };
  model.stats = stats;
  const t0 = performance.now();
  // one logits buffer for the whole loop (the sampler is done with it before the
  // next step): no 4 x vocab bytes of garbage per token
  let logits = await seq.advance(ids, new Float32Array(model.config.vocab));
  let pos = seq.pos();
  const t1 = performance.now();
  stats.promptTokensPerSec = ids.length / ((t1 - t0) / 1000);
  const timing = model._decodeTiming;
  timing?.start();
  const dec = new StreamDecoder(model.tokenizer);
  let prev = ids[ids.length - 1]!;
  let text = '', emitted = 0;
  for (let n = 0; n < maxTokens; n++) {
    opts.signal?.throwIfAborted();
    const ts = timing ? performance.now() : 0;
    const id = sampler.sample(logits);
    if (timing) timing.sampleMs += performance.now() - ts;
    if (model.stopIds.includes(id)) {
      // the end token is not yielded, except to carry text held back for a stop string
      const rest = text + dec.flush();
      if (rest.length > emitted) yield { id, text: rest.slice(emitted) };
      break;
    }
    const last = n + 1 === maxTokens || pos >= model.config.maxSeq;
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
    logits = await seq.advance([id], logits);
    pos++;
    if (timing) {
      timing.stepMs += performance.now() - tf;
      timing.steps++;
    }
    stats.decodeTokensPerSec = stats.generatedTokens / ((performance.now() - t1) / 1000);
  }
  if (stats.generatedTokens > 0 && stats.decodeTokensPerSec === 0) stats.decodeTokensPerSec = stats.generatedTokens / ((performance.now() - t1) / 1000);
}
