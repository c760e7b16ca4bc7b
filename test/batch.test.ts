// batch.test.ts - continuous batching (loadModel(..., { maxSequences })): concurrent
// generations share forward passes and give the ids each gives alone.
import { expect } from 'chai';
import { loadModel, type Model } from '../lib/index';
import { STORIES_MODEL, STORIES_TOK, needStories } from './helpers';

type Job = { prompt: number[] | string; maxTokens: number; abortAfter?: number; breakAfter?: number };

/** Runs a generation, stopping it by abort or break after the given number of tokens. */
async function run(model: Model, job: Job): Promise<{ ids: number[]; aborted: boolean }> {
  const ac = new AbortController();
  const ids: number[] = [];
  try {
    for await (const t of model.generate(job.prompt, { maxTokens: job.maxTokens, signal: ac.signal })) {
      ids.push(t.id);
      if (ids.length === job.abortAfter) ac.abort();
      if (ids.length === job.breakAfter) break;
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
    return { ids, aborted: true };
  }
  return { ids, aborted: false };
}

/** Token ids a story-like prompt of n tokens (BOS, then words of the model's vocabulary). */
function prompt(model: Model, i: number, n: number): number[] {
  const words = ['Once', ' upon', ' a', ' time', ' there', ' was', ' a', ' little', ' girl', ' named', ' Lily', '.', ' She', ' liked', ' to', ' play'];
  const text = Array.from({ length: n }, (_, j) => words[(i * 7 + j) % words.length]).join('');
  return model.tokenizer.encode(text).slice(0, n);
}

describe('batched decode (maxSequences)', function () {
  this.timeout(300_000);
  let solo: Model, batched: Model;
  before(async function () {
    needStories(this);
    solo = await loadModel(STORIES_MODEL, { tokenizer: STORIES_TOK });
    batched = await loadModel(STORIES_MODEL, { tokenizer: STORIES_TOK, maxSequences: 4 });
  });
  after(() => {
    solo?.dispose();
    batched?.dispose();
  });

  it('16 concurrent generations of different lengths, some aborted or left mid-way, give the ids each gives alone', async () => {
    const jobs: Job[] = Array.from({ length: 16 }, (_, i) => ({
      prompt: prompt(solo, i, 3 + ((i * 5) % 23)),
      maxTokens: 4 + ((i * 13) % 60),
      ...(i % 5 === 3 ? { abortAfter: 3 } : i % 7 === 2 ? { breakAfter: 2 } : {}),
    }));
    jobs.push({ prompt: prompt(solo, 99, 300), maxTokens: 10 });  // a prompt prefilled over two steps
    const want: number[][] = [];
    for (const j of jobs) want.push((await run(solo, { ...j, abortAfter: undefined, breakAfter: undefined })).ids);
    // count the batched forward passes
    // count the batched forward passes (the addon's methods are read-only: an own property shadows it)
    const native = (batched as unknown as { native: { forwardBatch: (...a: unknown[]) => Promise<Float32Array> } }).native;
    const orig = native.forwardBatch.bind(native);
    let steps = 0, rows = 0;
    Object.defineProperty(native, 'forwardBatch', {
      configurable: true,
      value: (...a: unknown[]) => {
        steps++;
        rows += (a[1] as Int32Array).length;
        return orig(...a);
      },
    });
    try {
      const got = await Promise.all(jobs.map((j) => run(batched, j)));
      got.forEach((g, i) => {
        const j = jobs[i]!, stopAt = j.abortAfter ?? j.breakAfter;
        if (stopAt !== undefined && want[i]!.length >= stopAt) {
          expect(g.ids, `job ${i}`).to.deep.equal(want[i]!.slice(0, stopAt));
          expect(g.aborted, `job ${i}`).to.equal(j.abortAfter !== undefined);
        } else {
          expect(g.ids, `job ${i}`).to.deep.equal(want[i]);
        }
      });
    } finally {
      delete (native as { forwardBatch?: unknown }).forwardBatch;
    }
    // 4 slots: most steps carried several sequences
    expect(rows / steps).to.be.greaterThan(2.5);
    expect(batched.activeGenerations).to.deep.equal({ running: 0, waiting: 0 });
  });

  it('seeded sampled generations repeat in a batch, and continue / conversations keep the model context (slot 0)', async () => {
    // (sampled ids may differ from a run alone: rows multiplied together round differently,
    // ~1e-5 in the logits, which can swap two near-equal tokens in top-p's order)
    const opts = { maxTokens: 24, temperature: 0.8, topP: 0.9 };
    const batch = () => Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => {
      const ids: number[] = [];
      for await (const t of batched.generate(prompt(solo, i, 6), { ...opts, seed: i })) ids.push(t.id);
      return ids;
    }));
    const a = await batch(), b = await batch();
    expect(a).to.deep.equal(b);
    expect(new Set(a.map((x) => x.join(','))).size).to.be.greaterThan(1);

    // a generation alone runs in slot 0 (the model's context); continue extends it while
    // other generations run in the other slots
    const first: number[] = [];
    for await (const t of batched.generate(prompt(solo, 1, 5), { maxTokens: 5, continue: false })) first.push(t.id);
    const gen = batched.generate([first[first.length - 1]!], { maxTokens: 5, continue: true });
    const head = gen.next();  // runs to its slot request: slot 0 is taken now
    const more = Promise.all([0, 1, 2].map((i) => run(batched, { prompt: prompt(solo, i + 7, 9), maxTokens: 20 })));
    const cont: number[] = [];
    for (let r = await head; !r.done; r = await gen.next()) cont.push(r.value.id);
    await more;
    // the same in one context, alone
    const ref: number[] = [];
    for await (const t of solo.generate(prompt(solo, 1, 5), { maxTokens: 5 })) ref.push(t.id);
    const refCont: number[] = [];
    for await (const t of solo.generate([ref[ref.length - 1]!], { maxTokens: 5, continue: true })) refCont.push(t.id);
    expect(first).to.deep.equal(ref);
    expect(cont).to.deep.equal(refCont);
    expect(batched.length).to.equal(solo.length);

    // a conversation's turns run in slot 0 beside other generations, as they do alone
    const template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
    const turns = async (m: Model, busy: boolean) => {
      const c = m.conversation({ template, maxTokens: 8 });
      const out: string[] = [];
      for (const say of ['Once upon a time', 'The dog']) {
        const others = busy ? Promise.all([3, 4].map((i) => run(m, { prompt: prompt(solo, i, 7), maxTokens: 30 }))) : null;
        let text = '';
        for await (const t of c.send(say)) text += t.text;
        out.push(text);
        await others;
      }
      return out;
    };
    expect(await turns(batched, true)).to.deep.equal(await turns(solo, false));
  });

  it('forward() and reset() refuse to touch the model context (slot 0) while a generation holds it, with one slot or several; forward() calls made first run first', async () => {
    for (const m of [solo, batched]) {
      m.reset();
      const want: number[] = [];
      for await (const t of m.generate(prompt(solo, 2, 6), { maxTokens: 6 })) want.push(t.id);
      const genLength = m.length;
      const wantLogits = await m.forward([want[want.length - 1]!]);
      const wantLength = m.length;
      // while the generation holds slot 0: refused, and the generation is untouched
      const gen = m.generate(prompt(solo, 2, 6), { maxTokens: 6 });
      const got: number[] = [];
      const first = await gen.next();  // the slot is held from here on
      got.push((first.value as { id: number }).id);
      const where = m === solo ? 'one slot' : 'four slots';
      let refused = '';
      await m.forward([1]).catch((e: Error) => { refused = e.message; });
      expect(refused, where).to.match(/^forward: a generation is running in the model's context/);
      refused = '';
      await m.forwardAll([1, 2]).catch((e: Error) => { refused = e.message; });
      expect(refused, where).to.match(/^forwardAll: a generation is running/);
      expect(() => m.reset(), where).to.throw(/^reset: a generation is running in the model's context/);
      for (let r = await gen.next(); !r.done; r = await gen.next()) got.push(r.value.id);
      expect(got, where).to.deep.equal(want);
      // free again: the same logits as before
      expect(Array.from(await m.forward([want[want.length - 1]!]))).to.deep.equal(Array.from(wantLogits));
      expect(m.length).to.equal(wantLength);
      // a forward() called before a generation that continues the context runs first
      m.reset();
      const fwd = m.forward(prompt(solo, 3, 5));
      const cont: number[] = [];
      for await (const t of m.generate([7], { maxTokens: 3, continue: true })) cont.push(t.id);
      await fwd;
      m.reset();
      await m.forward(prompt(solo, 3, 5));
      const alone: number[] = [];
      for await (const t of m.generate([7], { maxTokens: 3, continue: true })) alone.push(t.id);
      expect(cont, where).to.deep.equal(alone);
      // and one that starts over (from an empty context) does not see its tokens
      m.reset();
      const fwd2 = m.forward(prompt(solo, 4, 5));
      const fresh: number[] = [];
      for await (const t of m.generate(prompt(solo, 2, 6), { maxTokens: 6 })) fresh.push(t.id);
      await fwd2;
      expect(fresh, where).to.deep.equal(want);
      expect(m.length, where).to.equal(genLength);
      m.reset();
      expect(m.length).to.equal(0);
    }
  });

  it('reports its KV cache (maxSequences x one slot) and refuses bad maxSequences', async () => {
    expect(batched.maxSequences).to.equal(4);
    expect(batched.kvCacheBytes).to.equal(4 * solo.kvCacheBytes);
    for (const bad of [0, -1, 1.5, 5000, NaN]) {
      let err: unknown;
      try {
        await loadModel(STORIES_MODEL, { tokenizer: STORIES_TOK, maxSequences: bad });
      } catch (e) {
        err = e;
      }
      expect(err, String(bad)).to.be.instanceOf(RangeError);
      expect((err as Error).message).to.match(/maxSequences must be an integer/);
    }
    let err: unknown;
    try {
      await loadModel(STORIES_MODEL, { tokenizer: STORIES_TOK, maxSequences: 2, device: 'cuda' });
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).to.match(/maxSequences > 1 \(batched decode\) runs on the CPU/);
  });

  it('an abort while waiting for a slot rejects at once and leaves the slots consistent', async () => {
    const long = Array.from({ length: 4 }, (_, i) => run(batched, { prompt: prompt(solo, i, 4), maxTokens: 40 }));
    const ac = new AbortController();
    const waiting = (async () => {
      for await (const _ of batched.generate(prompt(solo, 5, 4), { maxTokens: 5, signal: ac.signal })) { /* no tokens before the abort */ }
    })();
    await new Promise((r) => setImmediate(r));
    expect(batched.activeGenerations.waiting).to.equal(1);
    ac.abort();
    let err: unknown;
    try {
      await waiting;
    } catch (e) {
      err = e;
    }
    expect((err as Error).name).to.equal('AbortError');
    await Promise.all(long);
    expect(batched.activeGenerations).to.deep.equal({ running: 0, waiting: 0 });
  });
});
