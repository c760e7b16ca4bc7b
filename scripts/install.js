#!/usr/bin/env node
// install.js - npm's install step. Uses the prebuilt binary when one matches
// this platform (prebuilds/<platform>-<arch>/), else builds the addon from
// source with cmake-js (CUDA only when nvcc is found).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const force = process.env.SPARQ_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true';

let prebuilt = [];
try {
  prebuilt = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
} catch {
  /* none for this platform */
}
if (prebuilt.length && !force) {
  console.log(`sparq: using prebuilt binary ${path.join('prebuilds', `${process.platform}-${process.arch}`, prebuilt[0])}`);
  process.exit(0);
}

console.log('sparq: no prebuilt binary for this platform; building from source with cmake-js');
const args = ['compile'];
if (process.env.SPARQ_CUDA) args.push(`--CDSPARQ_CUDA=${process.env.SPARQ_CUDA}`);
if (process.env.SPARQ_CUDA_ARCHS) args.push(`--CDSPARQ_CUDA_ARCHS=${process.env.SPARQ_CUDA_ARCHS}`);
let cli;
try {
  cli = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
} catch {
  console.error('sparq: cmake-js is missing; run `npm install` again or install cmake-js');
  process.exit(1);
}
const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error(
    'sparq: building the native addon failed. Install cmake (>= 3.18) and a C++17 compiler ' +
      '(Debian/Ubuntu: apt-get install cmake g++), then run `npm rebuild sparq`.',
  );
  process.exit(r.status ?? 1);
}
