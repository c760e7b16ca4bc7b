// evaluate(): perplexity, KL divergence and top-1 agreement of a compressed
// model against its reference, on stories260K with evaluation text the f32
// model wrote itself (sampled, seeded).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { evaluate, loadModel, quantizeModel, type Model } from '../lib/index';
import { ROOT, STORIES_MODEL as MODEL, STORIES_TOK as TOK, needStories } from './helpers';

describe('evaluate: stories260K', function () {
  this.timeout(300000);
  let f32: Model, int8: Model;
  let tokens: number[][];

  before(async function () {
    needStories(this);
    f32 = await loadModel(MODEL, { tokenizer: TOK });
    int8 = await loadModel(MODEL, { tokenizer: TOK, weights: 'int8' });
    tokens = [];
    for (let i = 0; i < 8; i++) {
      const ids = f32.tokenizer.encode(['Once upon a time', 'One day', 'The little dog', 'Lily and Ben'][i % 4]!);
      for await (const t of f32.generate(ids, { maxTokens: 250, temperature: 1, seed: 1000 + i })) ids.push(t.id);
      tokens.push(ids);
    }
  });
  after(() => {
    f32?.dispose();
    int8?.dispose();
  });

  it('a model against itself: KLD 0, agreement 1, equal perplexities', async () => {
    const r = await evaluate(f32, f32, { tokens: tokens.slice(0, 2), contextLength: 128 });
    expect(r.meanKLD).to.equal(0);
    expect(r.kldPercentiles).to.deep.equal({ p50: 0, p90: 0, p99: 0 });
    expect(r.top1Agreement).to.equal(1);
    expect(r.perplexity).to.equal(r.referencePerplexity);
    expect(r.perplexity).to.be.above(1).and.below(50);
    expect(r.tokens).to.equal(tokens.slice(0, 2).reduce((a, s) => a + (s.length - Math.ceil((s.length - 1) / 128)), 0));
  });

  it('perplexity is the exp of the mean next-token NLL (checked by hand on one window)', async () => {
    const w = tokens[0]!.slice(0, 40);
    const r = await evaluate(int8, f32, { tokens: [w], contextLength: 64 });
    f32.reset();
    const logits = await f32.forwardAll(w);
    const V = f32.config.vocab;
    let nll = 0;
    for (let t = 0; t + 1 < w.length; t++) {
      const l = logits.subarray(t * V, (t + 1) * V);
      const m = Math.max(...l);
      const z = l.reduce((a, v) => a + Math.exp(v - m), 0);
      nll -= l[w[t + 1]!]! - m - Math.log(z);
    }
    expect(r.referencePerplexity).to.be.closeTo(Math.exp(nll / (w.length - 1)), 1e-9 * r.referencePerplexity);
    expect(r.tokens).to.equal(w.length - 1);
  });

  it('W8 per-channel + dynamic int8 activations: mean KLD <= 2e-3, top-1 agreement recorded (97.8% here)', async () => {
    const r = await evaluate(int8, f32, { tokens, contextLength: 256 });
    console.log(`      stories260K int8 (W8 per-channel, A8 dynamic per-token) vs f32 over ${r.tokens} positions: ` +
      `PPL ${r.perplexity.toFixed(4)} vs ${r.referencePerplexity.toFixed(4)}, mean KLD ${r.meanKLD.toExponential(3)} ` +
      `(p50 ${r.kldPercentiles.p50.toExponential(2)}, p90 ${r.kldPercentiles.p90.toExponential(2)}, p99 ${r.kldPercentiles.p99.toExponential(2)}), ` +
      `top-1 ${(100 * r.top1Agreement).toFixed(2)}%`);
    expect(r.meanKLD).to.be.above(0).and.at.most(2e-3);
    // 97.80% on this prompt-started text (98.25% on the BOS-started samples of quantize_model.test.ts,
    // which holds the 98% bound): near-ties of a 512-token vocabulary at temperature 1
    expect(r.top1Agreement).to.be.at.least(0.975);
    expect(r.kldPercentiles.p50).to.be.at.most(r.kldPercentiles.p90);
    expect(r.kldPercentiles.p90).to.be.at.most(r.kldPercentiles.p99);
  });

  it('npx sparq eval: int8 and a pruned model against f32, as a table and as JSON', () => {
    const cli = (...a: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'lib/cli.ts', 'eval', '--model', MODEL, '--tokenizer', TOK, ...a], { cwd: ROOT, encoding: 'utf8' });
    const t = cli('--weights', 'int8', '--sample', '300');
    expect(t.status, t.stderr).to.equal(0);
    expect(t.stdout).to.match(/perplexity\s+\d+\.\d+ \(reference \d+\.\d+\)/);
    expect(t.stdout).to.match(/top-1 agreement\s+\d+\.\d+%/);
    const j = cli('--prune', 'magnitude:2:4', '--sample', '300', '--json');
    expect(j.status, j.stderr).to.equal(0);
    const r = JSON.parse(j.stdout) as { meanKLD: number; top1Agreement: number; tokens: number; prune: { sparsity: number } };
    expect(r.meanKLD).to.be.above(0);
    expect(r.tokens).to.be.at.least(290);
    expect(r.prune.sparsity).to.equal(0.5);
    const q = cli('--quantize', 'int8:g32', '--static', 'minmax', '--sample', '200', '--json');
    expect(q.status, q.stderr).to.equal(0);
    const rq = JSON.parse(q.stdout) as { candidate: string; meanKLD: number; quantize: { weights: string; activations: string } };
    expect([rq.quantize.weights, rq.quantize.activations]).to.deep.equal(['int8 per group of 32', 'static per tensor (minmax)']);
    expect(rq.meanKLD).to.be.above(0).and.below(0.1);
    const bad = cli('--prune', 'wanda:3');
    expect(bad.status).to.equal(1);
    expect(bad.stderr).to.match(/--prune must look like/);
  });

  it('npx sparq compress writes a model loadModel reads, and eval scores it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-compress-'));
    try {
      const out = path.join(dir, 'q.safetensors');
      const run = (...a: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'lib/cli.ts', ...a], { cwd: ROOT, encoding: 'utf8' });
      const c = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', out, '--quantize', 'int8:g32', '--json');
      expect(c.status, c.stderr).to.equal(0);
      const r = JSON.parse(c.stdout) as { bytesOut: number; quantize: { weights: string } };
      expect(r.quantize.weights).to.equal('int8 per group of 32');
      expect(r.bytesOut).to.equal(fs.statSync(out).size);
      const q = await loadModel(out);
      const direct = await quantizeModel(f32, { weights: { granularity: { groupSize: 32 } } });
      try {
        expect(Array.from(await q.forwardAll(tokens[0]!.slice(0, 32)))).to.deep.equal(Array.from(await direct.forwardAll(tokens[0]!.slice(0, 32))));
      } finally {
        q.dispose();
        direct.dispose();
      }
      const e = run('eval', '--model', out, '--reference', MODEL, '--tokenizer', TOK, '--sample', '200', '--json');
      expect(e.status, e.stderr).to.equal(0);
      expect((JSON.parse(e.stdout) as { meanKLD: number }).meanKLD).to.be.above(0).and.below(0.01);
      const p = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', path.join(dir, 'p.safetensors'), '--prune', 'magnitude:2:4', '--quantize', 'int8');
      expect(p.status, p.stderr).to.equal(0);
      expect(p.stdout).to.match(/50\.0% of linear weights zero/);
      const g = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', path.join(dir, 'g.safetensors'), '--quantize', 'int8:g32', '--gptq', '--json');
      expect(g.status, g.stderr).to.equal(0);
      const rg = JSON.parse(g.stdout) as { quantize: { weights: string; gptq: { error: number; rtnError: number } } };
      expect(rg.quantize.weights).to.equal('int8 per group of 32 (GPTQ)');
      expect(rg.quantize.gptq.error).to.be.below(rg.quantize.gptq.rtnError);
      const i4 = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', path.join(dir, 'i4.safetensors'), '--quantize', 'int4:g64');
      expect(i4.status, i4.stderr).to.equal(0);
      expect(i4.stdout).to.match(/int4 per group of 64/);
      expect(fs.statSync(path.join(dir, 'i4.safetensors')).size).to.be.below(fs.statSync(out).size);
      const bad = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', path.join(dir, 'x'), '--prune', 'wanda:0.5', '--quantize', 'int8:g32');
      expect(bad.status).to.equal(1);
      expect(bad.stderr).to.match(/--prune with --quantize takes int8/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad input gives clear errors', async () => {
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => evaluate(int8, f32, {}), /give texts or tokens/],
      [() => evaluate(int8, f32, { tokens: [[1, 99999]] }), /outside \[0, 512\)/],
      [() => evaluate(int8, f32, { tokens: [[1]] }), /no position to score/],
      [() => evaluate(int8, f32, { tokens: [[1, 2, 3]], contextLength: 1 }), /contextLength must be/],
    ];
    for (const [f, re] of cases) {
      let err: Error | undefined;
      try { await f(); } catch (e) { err = e as Error; }
      expect(err?.message, String(re)).to.match(re);
    }
  });
});
