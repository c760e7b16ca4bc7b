#!/usr/bin/env node
// prebuild.js - `npm run prebuild`: builds the addon with cmake-js (every CPU
// path; the CUDA kernels for sm_80/86/89/90 + PTX, which needs nvcc unless
// SPARQ_CUDA=OFF is set), and places it, stripped, in prebuildify's layout:
// prebuilds/<platform>-<arch>/sparq.napi.node. The loader (lib/native.ts) and
// the install step (scripts/install.js) prefer it over a local build. Checks
// that the result loads in a fresh process and says what it contains.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const cuda = process.env.SPARQ_CUDA ?? 'ON';
const cli = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const args = ['compile', `--CDSPARQ_CUDA=${cuda}`, '--CDCMAKE_BUILD_TYPE=Release'];
if (process.env.SPARQ_CUDA_ARCHS) args.push(`--CDSPARQ_CUDA_ARCHS=${process.env.SPARQ_CUDA_ARCHS}`);
console.log(`prebuild: cmake-js ${args.join(' ')}`);
let r = spawnSync(process.execPath, [cli, ...args], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('prebuild: the build failed' + (cuda === 'ON' ? ' (a prebuild carries the CUDA kernels: install nvcc, or set SPARQ_CUDA=OFF for a CPU-only one)' : ''));
  process.exit(r.status ?? 1);
}
const built = path.join(root, 'build', 'Release', 'sparq.node');
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(dir, { recursive: true });
const out = path.join(dir, 'sparq.napi.node');
fs.copyFileSync(built, out);
r = spawnSync('strip', ['--strip-unneeded', out], { stdio: 'inherit' });
if (r.error || r.status !== 0) console.warn('prebuild: strip is not available; the binary keeps its symbols');
const probe = spawnSync(process.execPath, ['-e', `
  const b = require(${JSON.stringify(out)});
  const i = b.info();
  console.log(JSON.stringify({ isas: i.cpu.supportedIsas, cuda: { compiled: i.cuda.compiled, archs: i.cuda.archs } }));
`], { encoding: 'utf8' });
if (probe.status !== 0) {
  console.error(`prebuild: ${out} does not load:\n${probe.stderr}`);
  process.exit(1);
}
const meta = JSON.parse(probe.stdout.trim());
if (cuda === 'ON' && !meta.cuda.compiled) {
  console.error('prebuild: the binary has no CUDA kernels');
  process.exit(1);
}
console.log(`prebuild: ${path.relative(root, out)} (${(fs.statSync(out).size / 2 ** 20).toFixed(1)} MiB, CUDA ${meta.cuda.compiled ? `sm_${meta.cuda.archs.split(',').join('/')}` : 'off'}, this CPU runs ${meta.isas.join(', ')})`);
