// check.cjs - run from an app that installed the packed tarball: a GEMM, an
// attention call and a generate through the installed package (CommonJS).
// Exits non-zero with a message on any mismatch.
'use strict';
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const sparq = require('sparq');

async function main() {
  const where = require.resolve('sparq');
  const prebuilt = path.join(path.dirname(where), '..', 'prebuilds', `${process.platform}-${process.arch}`, 'sparq.napi.node');
  assert.ok(fs.existsSync(prebuilt), `the package has no prebuild at ${prebuilt}`);
  const i = sparq.info();
  const isa = process.env.SPARQ_ISA || 'default';
  // exact int8 GEMM against a JS reference
  const m = 5, n = 7, k = 67;
  const a = Int8Array.from({ length: m * k }, (_, t) => ((t * 37) % 255) - 127);
  const b = Int8Array.from({ length: n * k }, (_, t) => ((t * 91) % 255) - 127);
  const c = await sparq.matmulInt8(sparq.Tensor.from(a, [m, k]), sparq.Tensor.from(b, [n, k]));
  const got = c.toArray();
  for (let r = 0; r < m; r++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let q = 0; q < k; q++) s += a[r * k + q] * b[j * k + q];
    assert.strictEqual(got[r * n + j], s, `matmulInt8 [${r}, ${j}]`);
  }
  // attention: one query over two keys against the softmax by hand
  const q = sparq.Tensor.from(Float32Array.from([1, 0]), [1, 1, 1, 2]);
  const kk = sparq.Tensor.from(Float32Array.from([1, 0, 0, 1]), [1, 1, 2, 2]);
  const v = sparq.Tensor.from(Float32Array.from([1, 2, 3, 4]), [1, 1, 2, 2]);
  const o = (await sparq.attention(q, kk, v, { scale: 1 })).toArray();
  const w0 = Math.exp(1) / (Math.exp(1) + 1);
  assert.ok(Math.abs(o[0] - (w0 * 1 + (1 - w0) * 3)) < 1e-5 && Math.abs(o[1] - (w0 * 2 + (1 - w0) * 4)) < 1e-5, `attention ${o}`);
  // generate: stories260K when it is there (greedy ids against run.c), else a generated model
  const dir = process.env.STORIES_DIR;
  let gen;
  if (dir && fs.existsSync(path.join(dir, 'stories260K.bin'))) {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')).entries[0];
    // an f32 KV cache, as run.c's (the default f16 one rounds what these exact ids are compared with)
    const model = await sparq.loadModel(path.join(dir, 'stories260K.bin'), { tokenizer: path.join(dir, 'tok512.bin'), kvCache: 'f32' });
    const ids = [];
    for await (const t of model.generate(ref.prompt_token_ids, { maxTokens: ref.n_generated, temperature: 0 })) ids.push(t.id);
    assert.deepStrictEqual(ids, ref.generated_token_ids, 'stories260K greedy ids');
    gen = `stories260K: ${ids.length} greedy tokens match run.c`;
    model.dispose();
  } else {
    gen = 'stories260K not found (STORIES_DIR): generate not checked';
    if (process.env.SPARQ_EXPECT_MODEL === '1') throw new Error(gen);
  }
  console.log(`  cjs ok (isa ${isa} -> gemm ${i.kernels.gemm_s8}, attention ${i.kernels.attention}; cuda compiled=${i.cuda.compiled}) ${gen}; loaded from ${path.relative(process.cwd(), where)}`);
}

main().catch((e) => {
  console.error(`  cjs FAILED: ${e.stack ?? e}`);
  process.exit(1);
});
