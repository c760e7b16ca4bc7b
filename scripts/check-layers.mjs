#!/usr/bin/env node
// check-layers.mjs - fails when a native source includes a header of a layer it
// may not see (docs/DESIGN.md, "Layers"): the public API sees only itself, the
// CPU kernel library and the CUDA kernel library see the public API and
// themselves, the model sees those and the CPU library, the addon sees all of
// them, tests see anything. Quoted includes are resolved as the compiler does
// (beside the file, then native/include); <...> includes are system headers.
//   node scripts/check-layers.mjs          exit 1 on an include that breaks the rules
//   node scripts/check-layers.mjs --list   also print every cross-layer include
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const native = path.join(root, 'native');

/** layer -> the layers it may include */
export const RULES = {
  include: ['include'],
  cpu: ['include', 'cpu'],
  cuda: ['include', 'cuda'],
  model: ['include', 'cpu', 'model'],
  addon: ['include', 'cpu', 'model', 'addon'],
  test: ['include', 'cpu', 'cuda', 'model', 'addon', 'test'],
};

/** Includes that break the rules, each to be removed (not added to): none. */
export const KNOWN = new Set([]);

const SOURCE = /\.(c|cc|cpp|h|hpp|cu|cuh)$/;

function* sources(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (SOURCE.test(e.name)) yield p;
  }
}

/** Every quoted include of the native tree (`dir`): { from, to, fromLayer, toLayer }, paths relative to it. */
export function includes(dir = native) {
  const layerOf = (file) => path.relative(dir, file).split(path.sep)[0];
  const out = [];
  for (const file of sources(dir)) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^\s*#\s*include\s+"([^"]+)"/gm)) {
      const beside = path.resolve(path.dirname(file), m[1]), pub = path.join(dir, 'include', m[1]);
      const target = fs.existsSync(beside) ? beside : fs.existsSync(pub) ? pub : null;
      if (!target || !target.startsWith(dir + path.sep)) continue;  // generated or outside the tree
      out.push({ from: path.relative(dir, file), to: path.relative(dir, target), fromLayer: layerOf(file), toLayer: layerOf(target) });
    }
  }
  return out;
}

/** { bad: includes that break the rules and are not known, known: the known ones still present, stale: known ones gone } */
export function check(dir = native, known = KNOWN) {
  const all = includes(dir), seen = new Set();
  const bad = [];
  for (const i of all) {
    const allowed = RULES[i.fromLayer];
    if (!allowed) {
      bad.push({ ...i, why: `native/${i.fromLayer} is not a known layer (add it to RULES)` });
      continue;
    }
    if (allowed.includes(i.toLayer)) continue;
    const key = `${i.from} -> ${i.to}`;
    if (known.has(key)) seen.add(key);
    else bad.push({ ...i, why: `native/${i.fromLayer} may include ${allowed.join(', ')} only` });
  }
  return { all, bad, known: [...seen], stale: [...known].filter((k) => !seen.has(k)) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = check();
  if (process.argv.includes('--list'))
    for (const i of r.all.filter((x) => x.fromLayer !== x.toLayer)) console.log(`  ${i.from} -> ${i.to}`);
  for (const k of r.known) console.log(`known, to be removed: ${k}`);
  for (const k of r.stale) console.log(`gone (remove it from KNOWN): ${k}`);
  for (const b of r.bad) console.error(`upward include: native/${b.from} includes native/${b.to}: ${b.why}`);
  console.log(`${r.all.length} includes checked; ${r.bad.length} break the layer rules`);
  process.exit(r.bad.length || r.stale.length ? 1 : 0);
}
