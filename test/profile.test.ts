// The decode profile behind `bench e2e --profile`: the forward pass's stage
// timers cover it, count what ran, and cost nothing when off; the generate
// loop's timing hook sees every decode step.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, type Model } from '../lib/index';
import { loadNative } from '../lib/native';
import type { DecodeTiming } from '../lib/model/model';
import { STORIES_DIR as DIR, STORIES_MODEL as MODEL, STORIES_TOK as TOK } from './helpers';

describe('profile: per-op-class timers of the forward pass', function () {
  this.timeout(120000);
  let m: Model;
  const native = loadNative();
  before(async () => {
    expect(fs.existsSync(MODEL), `the stories260K model must be at ${DIR}`).to.equal(true);
    m = await loadModel(MODEL, { tokenizer: TOK });
  });
  after(() => {
    native.profile(false, true);
    m?.dispose();
  });

  it('off: nothing is counted', async () => {
    native.profile(false, true);
    await m.forward([1, 2, 3]);
    const p = native.profile(undefined, false);
    for (const [k, v] of Object.entries(p)) expect(v.calls, k).to.equal(0);
  });

  it('on: every stage of every layer is counted once per forward, and the stages add up to the forward', async () => {
    m.reset();
    const layers = m.config.layers;
    // the prompt first, untimed: a forward of more tokens than before grows the model's
    // buffers before its first stage (outside the stage timers, inside the forward's)
    await m.forward([1, 40, 41, 42]);
    native.profile(true, true);
    for (let i = 0; i < 5; i++) await m.forward([7 + i]);
    const p = native.profile(false, true);
    expect(p.forward!.calls).to.equal(5);
    for (const k of ['qkv', 'heads', 'kv_store', 'attention', 'wo', 'ffn_up', 'ffn_down']) expect(p[k]!.calls, k).to.be.at.least(5 * layers);
    for (const k of ['embed', 'classifier', 'rope']) expect(p[k]!.calls, k).to.be.at.least(5);
    const stages = ['embed', 'norm', 'qkv', 'heads', 'rope', 'kv_store', 'attention', 'wo', 'ffn_up', 'swiglu', 'ffn_down', 'residual', 'classifier'];
    const sum = stages.reduce((a, k) => a + p[k]!.ns, 0);
    for (const k of stages.filter((s) => s !== 'swiglu')) expect(p[k]!.ns, k).to.be.above(0);
    // the stages are timed back to back inside the forward's own timer
    expect(sum).to.be.at.most(p.forward!.ns);
    console.log(`      stages ${(sum / 1e3).toFixed(0)} us of the forward's ${(p.forward!.ns / 1e3).toFixed(0)} us over 5 steps`);
    expect(sum).to.be.above(0.8 * p.forward!.ns);
    // a reset read zeroes them
    for (const v of Object.values(native.profile(undefined, false))) expect(v.calls).to.equal(0);
  });

  it('the generate loop reports each decode step to its timing hook', async () => {
    let started = 0;
    const timing: DecodeTiming = { sampleMs: 0, stepMs: 0, steps: 0, start: () => { started++; } };
    m._decodeTiming = timing;
    let n = 0;
    try {
      for await (const t of m.generate([1, 40, 41], { maxTokens: 12 })) { void t; n++; }
    } finally {
      m._decodeTiming = undefined;
    }
    expect(started).to.equal(1);
    expect(n).to.equal(12);
    expect(timing.steps).to.equal(11);  // the last token is not fed back
    expect(timing.stepMs).to.be.above(0);
    expect(timing.sampleMs).to.be.above(0);
  });
});
