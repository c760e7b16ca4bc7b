// The build recipes agree: binding.gyp (node-gyp, CPU-only) compiles the same
// C++ sources as CMakeLists.txt, and release builds never use -march=native.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { info } from '../lib/index';
import { ROOT } from './helpers';

function cppSources(text: string): string[] {
  return [...new Set([...text.matchAll(/native\/[\w/]+\.cpp/g)].map((m) => m[0]))].filter((f) => !f.startsWith('native/test/')).sort();
}

describe('build recipes', () => {
  it('binding.gyp lists every C++ source that CMakeLists.txt builds (CUDA aside)', () => {
    const cmake = cppSources(fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8'));
    const gyp = cppSources(fs.readFileSync(path.join(ROOT, 'binding.gyp'), 'utf8'));
    expect(gyp).to.deep.equal(cmake);
    for (const f of cmake) expect(fs.existsSync(path.join(ROOT, f)), f).to.equal(true);
  });

  it('never compiles with -march=native', () => {
    for (const f of ['CMakeLists.txt', 'binding.gyp']) {
      expect(fs.readFileSync(path.join(ROOT, f), 'utf8')).to.not.match(/march=native/);
    }
  });

  it('reports whether CUDA was compiled in, and its devices', () => {
    const c = info().cuda;
    expect(c.compiled).to.be.a('boolean');
    expect(c.devices).to.be.a('number').at.least(0);
    if (c.compiled) expect(c.archs.length).to.be.above(0);
    console.log(`      cuda: compiled=${c.compiled} archs=${c.archs.join(',')} devices=${c.devices}${c.error ? ` (${c.error})` : ''}`);
  });
});
