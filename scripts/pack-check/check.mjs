// check.mjs - the installed package from ESM (named imports of the CommonJS
// build), and the addon inside two worker_threads at once (context-aware):
// both workers generate the same greedy ids as the main thread.
import { Worker } from 'node:worker_threads';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tensor, linear, info } from 'sparq';
import sparqDefault from 'sparq';

const x = Tensor.from(Float32Array.from([1, 2]), [1, 2]);
const w = Tensor.from(Float32Array.from([3, 4, 5, 6]), [2, 2]);
const y = (await linear(x, w)).toArray();
if (y[0] !== 11 || y[1] !== 17) throw new Error(`linear gave ${y}`);
if (sparqDefault.Tensor !== Tensor) throw new Error('default and named imports differ');

const dir = process.env.STORIES_DIR;
const workerCode = `
  const { parentPort, workerData } = require('node:worker_threads');
  const sparq = require('sparq');
  (async () => {
    const m = await sparq.loadModel(workerData.model, { tokenizer: workerData.tok });
    const ids = [];
    for await (const t of m.generate('Once upon a time', { maxTokens: 40, temperature: 0 })) ids.push(t.id);
    m.dispose();
    parentPort.postMessage(ids);
  })().catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }); });
`;
let workers = 'worker_threads not checked (no STORIES_DIR)';
if (process.env.SPARQ_EXPECT_MODEL === '1' && !(dir && fs.existsSync(path.join(dir, 'stories260K.bin')))) throw new Error(`stories260K not found (STORIES_DIR ${dir})`);
if (dir && fs.existsSync(path.join(dir, 'stories260K.bin'))) {
  const data = { model: path.join(dir, 'stories260K.bin'), tok: path.join(dir, 'tok512.bin') };
  const run = () => new Promise((resolve, reject) => {
    const wk = new Worker(workerCode, { eval: true, workerData: data });
    wk.once('message', (m) => (m && m.error ? reject(new Error(m.error)) : resolve(m)));
    wk.once('error', reject);
  });
  const { loadModel } = await import('sparq');
  const main = await loadModel(data.model, { tokenizer: data.tok });
  const ids = [];
  for await (const t of main.generate('Once upon a time', { maxTokens: 40, temperature: 0 })) ids.push(t.id);
  const [a, b] = await Promise.all([run(), run()]);
  for (const r of [a, b]) if (JSON.stringify(r) !== JSON.stringify(ids)) throw new Error(`worker ids ${r} != main ${ids}`);
  workers = `two workers generated the main thread's ${ids.length} ids at once`;
  main.dispose();
}
console.log(`  esm ok (named + default imports; ${info().threads} threads); ${workers}`);
