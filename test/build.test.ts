// The build recipes agree: binding.gyp (node-gyp, CPU-only) compiles the same
// C++ sources as CMakeLists.txt, and release builds never use -march=native.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { info } from '../lib/index';
import { ROOT, runChild } from './helpers';

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

  it('native layers: no source includes a header of a layer above it (scripts/check-layers.mjs), and the check catches one', async () => {
    const layers = await import(path.join(ROOT, 'scripts', 'check-layers.mjs')) as {
      check(dir?: string, known?: Set<string>): { all: unknown[]; bad: { from: string; to: string }[]; stale: string[] };
    };
    const r = layers.check();
    expect(r.all.length).to.be.above(100);
    expect(r.bad, 'upward includes').to.deep.equal([]);
    expect(r.stale, 'known exceptions that are gone').to.deep.equal([]);
    // a tree where the CPU library includes the model, and the model the addon
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-layers-'));
    try {
      const put = (f: string, text: string) => {
        fs.mkdirSync(path.dirname(path.join(tmp, f)), { recursive: true });
        fs.writeFileSync(path.join(tmp, f), text);
      };
      put('include/sparq/sparq.h', '#pragma once\n');
      put('cpu/k.cpp', '#include "sparq/sparq.h"\n#include "../model/m.h"\n#include <vector>\n');
      put('model/m.h', '#include "../cpu/k.h"\n#include "../addon/a.h"\n');
      put('cpu/k.h', '');
      put('addon/a.h', '#include "../model/m.h"\n');
      const t = layers.check(tmp, new Set());
      expect(t.bad.map((b) => `${b.from} -> ${b.to}`).sort()).to.deep.equal(['cpu/k.cpp -> model/m.h', 'model/m.h -> addon/a.h']);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('never compiles with -march=native', () => {
    for (const f of ['CMakeLists.txt', 'binding.gyp']) {
      expect(fs.readFileSync(path.join(ROOT, f), 'utf8')).to.not.match(/march=native/);
    }
  });

  it('docs/API.md is what scripts/api-docs.js generates from the current .d.ts', function () {
    if (!fs.existsSync(path.join(ROOT, 'dist', 'index.d.ts'))) this.skip();
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'api-docs.js'), '--check'], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
  });

  it('emulates no ISA path unless built with SPARQ_EMULATE_ISA (then every path runs, the missing ones emulated)', () => {
    const { supportedIsas, emulatedIsas } = info().cpu;
    if (process.env.SPARQ_EXPECT_EMULATED === '1') {
      expect(emulatedIsas).to.deep.equal(['avxvnni', 'avx512vnni', 'amx']);
      expect(supportedIsas).to.deep.equal(['ref', 'avx2', 'avxvnni', 'avx512vnni', 'amx']);
      expect(info().kernels.gemm_s8).to.not.be.oneOf(emulatedIsas);  // an emulated path only runs when asked for
    } else {
      expect(emulatedIsas).to.deep.equal([]);
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

describe('addon loader', function () {
  this.timeout(60000);
  it('lists every path it tried and what to do when no binary loads', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-loader-'));
    try {
      fs.cpSync(path.join(ROOT, 'lib'), path.join(tmp, 'lib'), { recursive: true });
      fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(tmp, 'package.json'));
      fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tmp, 'node_modules'));
      // a broken prebuilt binary must be reported, then the (missing) local build
      fs.mkdirSync(path.join(tmp, 'prebuilds', `${process.platform}-${process.arch}`), { recursive: true });
      fs.writeFileSync(path.join(tmp, 'prebuilds', `${process.platform}-${process.arch}`, 'sparq.napi.node'), 'not a binary');
      const r = runChild(`
        const { info } = require('./lib/index');
        try { info(); } catch (e) { console.log(e.message); process.exit(3); }`, {}, tmp);
      expect(r.status, r.stderr).to.equal(3);
      expect(r.stdout).to.match(/could not load the native addon/);
      expect(r.stdout).to.include(path.join('prebuilds', `${process.platform}-${process.arch}`, 'sparq.napi.node'));
      expect(r.stdout).to.match(/local build \(build\/Release\/sparq.node via bindings\)/);
      expect(r.stdout).to.match(/To fix: install a C\+\+17 compiler and cmake/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
