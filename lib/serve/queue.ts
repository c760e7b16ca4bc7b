// queue.ts - admission for the server: at most `slots` generations run at once
// (the model's sequences), at most `queue` more wait for one, in arrival order;
// past that a request is turned away (429). A waiter whose client goes away
// leaves the queue.

/** Thrown by Admission.enter when every slot is busy and the queue is full. */
export class QueueFullError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super('the server is busy: every sequence is generating and the queue is full; retry later');
    this.name = 'QueueFullError';
  }
}

interface Waiter {
  grant: () => void;
  fail: (e: unknown) => void;
}

export class Admission {
  active = 0;
  private readonly waiting: Waiter[] = [];
  /** seconds a generation took, smoothed (for Retry-After) */
  private meanSeconds = 1;

  constructor(readonly slots: number, readonly queue: number) {}

  get queued(): number {
    return this.waiting.length;
  }

  /**
   * A slot, now or once one frees up: resolves to its release function (call it exactly
   * once). Rejects at once with QueueFullError when the queue is full, and with the
   * signal's reason when it aborts while waiting.
   */
  enter(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const started = () => {
      const t0 = performance.now();
      let done = false;
      return () => {
        if (done) return;
        done = true;
        this.meanSeconds = 0.8 * this.meanSeconds + 0.2 * ((performance.now() - t0) / 1000);
        this.leave();
      };
    };
    if (this.active < this.slots) {
      this.active++;
      return Promise.resolve(started());
    }
    if (this.waiting.length >= this.queue) return Promise.reject(new QueueFullError(this.retryAfter()));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal!.reason);
      };
      const w: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(started());
        },
        fail: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      this.waiting.push(w);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Rejects every waiter with `e` (shutdown). */
  rejectWaiting(e: unknown): void {
    for (const w of this.waiting.splice(0)) w.fail(e);
  }

  /** Whole seconds until a slot is likely free for one more request: the queue ahead of it
   *  times the smoothed generation time, over the slots (1 to 60). */
  retryAfter(): number {
    const s = Math.ceil((this.meanSeconds * (this.waiting.length + 1)) / this.slots);
    return Math.min(60, Math.max(1, s));
  }

  private leave(): void {
    const next = this.waiting.shift();
    if (next) next.grant();  // the slot passes on: active stays
    else this.active--;
  }
}
