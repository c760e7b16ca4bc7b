// The model loaders under a seeded mutation loop (test/fuzz_child.ts) in a
// child process: truncated and corrupted llama2.c, tokenizer.bin, GGUF,
// safetensors / config.json / tokenizer.json and sparq files must each load
// (and then run) or be rejected with an Error naming the file - never crash
// the process or hang. One fixed seed and one fresh seed per run (printed, to
// reproduce: node --import tsx test/fuzz_child.ts SEED CASES).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { ROOT, random } from './helpers';

const CASES = Number(process.env.SPARQ_FUZZ_CASES ?? 1500);

describe('fuzzed model loaders', function () {
  this.timeout(600000);
  for (const seed of [20261123, (random() * 2 ** 31) >>> 0]) {
    it(`${CASES} mutated files (seed ${seed}): each loads and runs, or fails with an Error naming the file`, () => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join('test', 'fuzz_child.ts'), String(seed), String(CASES)], {
        cwd: ROOT, encoding: 'utf8', timeout: 300000, maxBuffer: 64 * 2 ** 20,
      });
      const last = r.stderr.trim().split('\n').filter((l) => l.startsWith('case ')).pop() ?? '(none)';
      if (r.error || r.status !== 0) {
        throw new Error(`fuzz child ${r.error ? `did not finish (${r.error.message})` : `exited with ${r.status} / ${r.signal}`}; last case started: ${last}\n${r.stderr.slice(-2000)}`);
      }
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { cases: number; loaded: number; rejected: number; topMessages: string[] };
      console.log(`      ${out.loaded} loaded and ran, ${out.rejected} rejected; most common: ${out.topMessages[0] ?? '-'}`);
      expect(out.cases).to.equal(CASES);
      expect(out.rejected).to.be.above(0);
      for (const m of out.topMessages) expect(m, 'names the file').to.match(/^\d+ x loadModel: \//);
    });
  }
});
