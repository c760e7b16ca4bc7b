#!/usr/bin/env node
// api-docs.js - docs/API.md from the compiled declarations (dist/*.d.ts):
// every symbol exported by dist/index.d.ts, with its signature and doc
// comment; class and interface members too, `@internal` ones left out.
// (TypeDoc and API Extractor need TypeScript's JavaScript compiler API, which
// the TypeScript 7 native compiler this package builds with does not have;
// tsc's .d.ts output is regular enough to read directly.)
//   node scripts/api-docs.js           write docs/API.md
//   node scripts/api-docs.js --check   exit 1 when docs/API.md is out of date
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist');

function read(mod) {
  return fs.readFileSync(path.join(dist, mod.replace(/^\.\//, '') + '.d.ts'), 'utf8');
}

// The names index.d.ts exports, grouped by the module they come from (in order).
function exportsOf() {
  const src = read('index');
  const groups = [];
  for (const m of src.matchAll(/export \{([^}]*)\} from '([^']+)';/g)) {
    const names = m[1].split(',').map((s) => s.trim().replace(/^type /, '')).filter(Boolean);
    groups.push({ module: m[2], names });
  }
  const local = [...src.matchAll(/^export (?:declare )?(?:function|const|class|interface|type) (\w+)/gm)].map((m) => m[1]);
  groups.push({ module: './index', names: local });
  return groups;
}

function docText(comment) {
  return comment
    .replace(/^\/\*\*\s?/, '')
    .replace(/\s*\*\/$/, '')
    .split('\n')
    .map((l) => l.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim();
}

// Top-level declarations of a .d.ts: name -> { doc, code }
function declarations(src) {
  const lines = src.split('\n');
  const out = new Map();
  let doc = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith('/**')) {
      let c = line;
      while (!c.includes('*/') && i + 1 < lines.length) c += '\n' + lines[++i];
      doc = c;
      continue;
    }
    const m = line.match(/^export (?:declare )?(?:abstract )?(function|const|class|interface|type|enum) (\w+)/);
    if (!m) {
      if (line.trim() && !line.startsWith('import')) doc = '';
      continue;
    }
    let code = line;
    if (/\{\s*$/.test(line) && (m[1] === 'class' || m[1] === 'interface' || m[1] === 'enum')) {
      // members up to the closing brace at column 0, without @internal ones
      const body = [];
      let pending = '';
      while (i + 1 < lines.length && lines[i + 1] !== '}') {
        const l = lines[++i];
        if (l.trim().startsWith('/**')) {
          let c = l;
          while (!c.includes('*/') && i + 1 < lines.length) c += '\n' + lines[++i];
          if (c.includes('@internal')) {
            // `/** @internal */ member;` on one line: skip it; else skip the next declaration line
            pending = c.slice(c.lastIndexOf('*/') + 2).trim() ? '' : '@internal';
            continue;
          }
          pending = c;
          continue;
        }
        if (pending === '@internal' || /^\s*private /.test(l)) {
          pending = '';
          continue;
        }
        if (pending) body.push(pending.split('\n').map((x) => '    ' + x.trim()).join('\n'));
        pending = '';
        body.push(l);
      }
      i++;
      code = [line, ...body, '}'].join('\n');
    } else {
      while (!/[;}]\s*$/.test(code) && i + 1 < lines.length) code += '\n' + lines[++i];
    }
    if (!out.has(m[2])) out.set(m[2], { kind: m[1], doc: doc ? docText(doc) : '', code });
    doc = '';
  }
  return out;
}

function render() {
  const parts = [
    '# sparq API',
    '',
    'Generated from the package\'s TypeScript declarations by `node scripts/api-docs.js`',
    '(the test suite fails when this file is out of date). Everything below is',
    'exported by `sparq`; see the README for a tour and docs/DESIGN.md for the why.',
    '',
  ];
  for (const { module, names } of exportsOf()) {
    const decls = declarations(read(module));
    const shown = names.filter((n) => decls.has(n));
    if (!shown.length) continue;
    parts.push(`## ${module.replace(/^\.\//, '')}`, '');
    for (const n of shown) {
      const d = decls.get(n);
      parts.push(`### ${n}`, '');
      if (d.doc) parts.push(d.doc, '');
      parts.push('```ts', d.code.replace(/^export (declare )?/, ''), '```', '');
    }
  }
  return parts.join('\n').replace(/\n{3,}/g, '\n\n');
}

const file = path.join(root, 'docs', 'API.md');
const text = render();
if (process.argv.includes('--check')) {
  const cur = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  if (cur !== text) {
    console.error('docs/API.md is out of date: run `npm run docs` (node scripts/api-docs.js)');
    process.exit(1);
  }
  console.log('docs/API.md is up to date');
} else {
  fs.writeFileSync(file, text);
  console.log(`wrote ${path.relative(root, file)} (${text.split('\n').length} lines)`);
}
