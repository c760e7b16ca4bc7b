// The README's TypeScript examples run as written (against this checkout).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from './helpers';

const MODELS = path.resolve(ROOT, '..', 'shared', 'models', 'stories260K');

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
    const code = blocks.find((b) => b.includes('loadModel(') && !b.includes('pruneModel('));
    expect(code, 'README has the generation example').to.be.a('string');
    if (!fs.existsSync(path.join(MODELS, 'stories260K.bin'))) {
      console.log(`      (skipped: the stories260K model is not at ${MODELS})`);
      this.skip();
    }
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/there was a little girl named Lily/);
    expect(r.stdout).to.match(/decodeTokensPerSec/);
  });

  it('the pruning example runs on stories260K', function () {
    const code = blocks.find((b) => b.includes('pruneModel('));
    expect(code, 'README has the pruning example').to.be.a('string');
    if (!fs.existsSync(path.join(MODELS, 'stories260K.bin'))) {
      console.log(`      (skipped: the stories260K model is not at ${MODELS})`);
      this.skip();
    }
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^0\.5 \d+$/);
    expect(lines[lines.length - 1]).to.match(/129 6$/);  // after the generated text
  });

  it('the quantize-and-evaluate example runs on stories260K', function () {
    const code = blocks.find((b) => b.includes('quantizeModel('));
    expect(code, 'README has the quantization example').to.be.a('string');
    if (!fs.existsSync(path.join(MODELS, 'stories260K.bin'))) {
      console.log(`      (skipped: the stories260K model is not at ${MODELS})`);
      this.skip();
    }
    const r = runExample(code!, MODELS);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('true true true');
  });
});
