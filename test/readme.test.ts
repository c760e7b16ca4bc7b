// The README's TypeScript examples run as written (against this checkout).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT, STORIES_DIR as MODELS, needStories } from './helpers';
import { writeRandomModel } from '../lib/model/synth';

function runExample(code: string, cwd: string): { status: number | null; stdout: string; stderr: string } {
  const lines = code.split('\n');
  const imports = lines.filter((l) => l.startsWith('import ')).map((l) => l.replace(/from 'sparq'/, `from ${JSON.stringify(path.join(ROOT, 'lib', 'index'))}`));
  const body = lines.filter((l) => !l.startsWith('import '));
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-readme-')), 'example.ts');
  fs.writeFileSync(file, `${imports.join('\n')}\nprocess.chdir(${JSON.stringify(cwd)});\n(async () => {\n${body.join('\n')}\n})().catch((e) => { console.error(e); process.exit(1); });\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, encoding: 'utf8' });
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  return r;
}

describe('README', function () {
  this.timeout(120000);
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);

  it('the kernel example runs and prints the chosen kernels and the weight error', () => {
    const code = blocks.find((b) => b.includes('quantize('));
    expect(code, 'README has the kernel example').to.be.a('string');
    const r = runExample(code!, ROOT);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/gemm_s8/);
    expect(r.stdout).to.match(/sqnr/);
  });

  it('the generation example runs on stories260K', function () {
    const code = blocks.find((b) => b.includes('model.generate(') && !b.includes('pruneModel('));
    expect(code, 'README has the generation example').to.be.a('string');
    needStories(this);
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/there was a little girl named Lily/);
    expect(r.stdout).to.match(/decodeTokensPerSec/);
  });

  it('the batching example runs on stories260K: four answers at once', function () {
    const code = blocks.find((b) => b.includes('maxSequences'));
    expect(code, 'README has the batching example').to.be.a('string');
    needStories(this);
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).to.have.length(4);
    expect(lines[0]).to.match(/^Once upon a time.{20,}/);
    expect(Number(lines[3]!.split(' ').pop())).to.be.greaterThan(0);  // kvCacheBytes
  });

  it('the chat example runs as written on a GGUF of that name (random weights, the real Llama 3 vocabulary and chat template)', function () {
    const code = blocks.find((b) => b.includes('.conversation('));
    expect(code, 'README has the chat example').to.be.a('string');
    const file = /loadModel\('([^']+\.gguf)'\)/.exec(code!)?.[1];
    expect(file, 'the chat example loads a GGUF file').to.be.a('string');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-readme-chat-'));
    try {
      const tj = path.join(ROOT, 'node_modules', '@lenml', 'tokenizer-llama3', 'models', 'tokenizer.json');
      const made = writeRandomModel(dir, { dim: 64, hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 128256, maxSeq: 1024, tied: true, ropeScaling: 'llama3', tokenizerJson: tj }, ['gguf-q4_k_m']);
      fs.renameSync(made['gguf-q4_k_m']!, path.join(dir, file!));
      const r = runExample(code!, dir);
      expect(r.status, r.stderr).to.equal(0);
      // the last line: the second turn's prefill (what a conversation prefills is checked in chat.test.ts)
      const last = /prefilled (\d+)\s*$/.exec(r.stdout);
      expect(last, r.stdout.slice(-300)).to.not.equal(null);
      expect(Number(last![1])).to.be.greaterThan(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the pruning example runs on stories260K', function () {
    const code = blocks.find((b) => b.includes('pruneModel('));
    expect(code, 'README has the pruning example').to.be.a('string');
    needStories(this);
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^0\.5 \d+$/);
    expect(lines[lines.length - 1]).to.match(/129 6$/);  // after the generated text
  });

  it('the quantize-and-evaluate example runs on stories260K', function () {
    const code = blocks.find((b) => b.includes('quantizeModel('));
    expect(code, 'README has the quantization example').to.be.a('string');
    needStories(this);
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('true true true');
  });
});
