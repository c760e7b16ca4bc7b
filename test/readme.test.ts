// The README's TypeScript example runs as written (against this checkout).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from './helpers';

describe('README', function () {
  this.timeout(120000);
  it('the TypeScript example runs and prints the chosen kernels and the weight error', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const code = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(code, 'README has a ts example').to.be.a('string');
    const lines = code!.split('\n');
    const imports = lines.filter((l) => l.startsWith('import ')).map((l) => l.replace(/from 'sparq'/, `from ${JSON.stringify(path.join(ROOT, 'lib', 'index'))}`));
    const body = lines.filter((l) => !l.startsWith('import '));
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-readme-')), 'example.ts');
    fs.writeFileSync(file, `${imports.join('\n')}\n(async () => {\n${body.join('\n')}\n})().catch((e) => { console.error(e); process.exit(1); });\n`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, encoding: 'utf8' });
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/gemm_s8/);
    expect(r.stdout).to.match(/sqnr/);
  });
});
