// batch.ts - continuous batching for one model: KV cache slots handed to
// generations (first come, first served) and the step loop that runs every
// waiting sequence's next tokens in one forward pass. A sequence submits its
// prompt (prefilled in chunks of at most `chunk` tokens a step) or its last
// sampled token and awaits its logits; the loop gathers whatever was submitted
// since the last step, so sequences join and leave between any two steps.

/** What the loop needs from the model: one batched forward pass, run in the model's call order. */
export interface BatchTarget {
  vocab: number;
  /** logits of each sequence's last token: out[i * vocab, (i + 1) * vocab) */
  forwardBatch(tokens: Int32Array, lengths: Int32Array, slots: Int32Array, out: Float32Array): Promise<Float32Array>;
}

/** KV slots: acquire() waits (in call order) for a free one, or for a given one. */
export class Slots {
  private readonly free: boolean[];
  private readonly waiters: { want: number; resolve: (slot: number) => void }[] = [];

  constructor(readonly count: number) {
    this.free = new Array<boolean>(count).fill(true);
  }

  /** Slots in use. */
  get busy(): number {
    return this.free.reduce((n, f) => n + (f ? 0 : 1), 0);
  }

  /** Whether a slot is taken now. */
  held(slot: number): boolean {
    return !this.free[slot];
  }

  /** Generations waiting for a slot. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * A free slot (want -1: the lowest free one, so that generations run one after
   * another use slot 0, the model's own context, as with one slot; else that slot).
   * Rejects with the signal's reason when it aborts first.
   */
  acquire(want: number, signal?: AbortSignal): Promise<number> {
    const got = this.take(want);
    if (got >= 0 && this.waiters.length === 0) return Promise.resolve(got);
    if (got >= 0) this.free[got] = true;  // others were first
    return new Promise<number>((resolve, reject) => {
      const w = {
        want,
        resolve: (slot: number) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(slot);
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
      this.grant();
    });
  }

  release(slot: number): void {
    this.free[slot] = true;
    this.grant();
  }

  /** Hands free slots to waiters in order (one wanting a busy slot does not hold back the others). */
  private grant(): void {
    for (let i = 0; i < this.waiters.length; ) {
      const got = this.take(this.waiters[i]!.want);
      if (got < 0) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1)[0]!.resolve(got);
    }
  }

  private take(want: number): number {
    let s = -1;
    if (want >= 0) s = this.free[want] ? want : -1;
    else s = this.free.indexOf(true);
    if (s >= 0) this.free[s] = false;
    return s;
  }
}

interface Pending {
  slot: number;
  ids: Int32Array;
  /** tokens of ids already run */
  done: number;
  out: Float32Array;
  resolve: (logits: Float32Array) => void;
  reject: (e: unknown) => void;
}

/**
 * The step loop: submit() queues a sequence's tokens; each step runs every queued
 * sequence's next chunk (decode tokens first, then prompts up to `chunk` tokens in
 * all) in one forward pass, and resolves the sequences whose tokens are all in.
 */
export class Batcher {
  private pending: Pending[] = [];
  private running = false;
  private scheduled = false;
  private buf: Float32Array;

  constructor(private readonly target: BatchTarget, private readonly maxSequences: number, private readonly chunk = 256) {
    this.buf = new Float32Array(0);
  }

  /** Sequences queued for the next step. */
  get queued(): number {
    return this.pending.length;
  }

  /** Appends ids to slot's context; resolves with the last one's logits, written to out. */
  submit(slot: number, ids: Int32Array, out: Float32Array): Promise<Float32Array> {
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.push({ slot, ids, done: 0, out, resolve, reject });
      this.schedule();
    });
  }

  // After the current callbacks and the promise jobs they start: the sequences that
  // a step just resolved sample and submit again before the next step is cut.
  private schedule(): void {
    if (this.running || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.step();
    });
  }

  private async step(): Promise<void> {
    if (this.running || this.pending.length === 0) return;
    this.running = true;
    const batch: { p: Pending; n: number }[] = [];
    const drop = (p: Pending) => {
      const i = this.pending.indexOf(p);
      if (i >= 0) this.pending.splice(i, 1);
    };
    try {
      // decode tokens (one left) first, then prompt chunks while the token budget lasts
      const order = [...this.pending].sort((a, b) => Number(a.ids.length - a.done > 1) - Number(b.ids.length - b.done > 1));
      let budget = Math.max(this.chunk, this.maxSequences);
      for (const p of order) {
        if (batch.length === this.maxSequences || budget === 0) break;
        const n = Math.min(p.ids.length - p.done, budget);
        batch.push({ p, n });
        budget -= n;
      }
      const total = batch.reduce((s, b) => s + b.n, 0);
      const tokens = new Int32Array(total), lengths = new Int32Array(batch.length), slots = new Int32Array(batch.length);
      let at = 0;
      batch.forEach(({ p, n }, i) => {
        tokens.set(p.ids.subarray(p.done, p.done + n), at);
        at += n;
        lengths[i] = n;
        slots[i] = p.slot;
      });
      const v = this.target.vocab;
      if (this.buf.length < batch.length * v) this.buf = new Float32Array(batch.length * v);
      const logits = await this.target.forwardBatch(tokens, lengths, slots, this.buf.subarray(0, batch.length * v));
      batch.forEach(({ p, n }, i) => {
        p.done += n;
        if (p.done < p.ids.length) return;  // more of its prompt next step
        drop(p);
        p.out.set(logits.subarray(i * v, (i + 1) * v));
        p.resolve(p.out);
      });
    } catch (e) {
      // the step failed: its sequences get the error (a settled one ignores it), the rest
      // go on; one that could not be set up fails every waiting sequence rather than retry
      const failed = batch.length ? batch.map((b) => b.p) : [...this.pending];
      for (const p of failed) {
        drop(p);
        p.reject(e);
      }
    } finally {
      this.running = false;
      if (this.pending.length) this.schedule();
    }
  }
}
