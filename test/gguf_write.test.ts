// Writing GGUF: a loaded model written in a ggml type holds, tensor for tensor,
// the bytes the random-model generator writes from the same f32 weights (the
// same native quantizers; Hugging Face sources get GGUF's interleaved RoPE rows
// back), and `npx sparq compress --out FILE.gguf` on the real stories model
// writes a file sparq loads with the source's tokenizer and close logits.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { loadModel, saveModel } from '../lib/index';
import { readGguf } from '../lib/model/gguf';
import { writeGgufModel } from '../lib/model/gguf_write';
import { writeRandomModel, type SynthConfig } from '../lib/model/synth';
import { ROOT, relErr, STORIES_MODEL as MODEL, STORIES_TOK as TOK } from './helpers';

const hash = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** name -> bytes of every tensor of a safetensors file */
function safetensorsOf(file: string): Map<string, Buffer> {
  const buf = fs.readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const head = JSON.parse(buf.subarray(8, 8 + len).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(head)) if (k !== '__metadata__') out.set(k, buf.subarray(8 + len + v.data_offsets[0], 8 + len + v.data_offsets[1]));
  return out;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-gguf-write-'));
const cfg: SynthConfig = { dim: 256, hidden: 512, layers: 2, heads: 4, kvHeads: 2, vocab: 400, maxSeq: 64, seed: 17 };

function tensorsOf(file: string): Map<string, { type: number; dims: number[]; data: Buffer }> {
  const g = readGguf(file), raw = fs.readFileSync(file);
  return new Map([...g.tensors.values()].map((t) => [t.name, { type: t.type, dims: t.dims, data: raw.subarray(t.offset, t.offset + t.bytes) }]));
}

describe('writing GGUF', function () {
  this.timeout(300000);
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('a llama2.c and a Hugging Face model written as Q4_K_M / Q4_0 / Q6_K hold exactly the generator\'s tensors', async () => {
    for (const [src, type] of [['llama2c', 'q4_k_m'], ['llama2c', 'q4_0'], ['hf', 'q6_k']] as const) {
      const dir = path.join(tmp, `${src}-${type}`);
      const files = writeRandomModel(dir, cfg, [src, `gguf-${type}`]);
      const m = await loadModel(files[src]!, src === 'llama2c' ? { tokenizer: files.tokenizer } : {});
      const out = path.join(dir, 'written.gguf');
      const r = await writeGgufModel(m, out, type);
      m.dispose();
      const want = tensorsOf(files[`gguf-${type}`]!), got = tensorsOf(out);
      expect([...got.keys()].sort(), `${src} ${type}`).to.deep.equal([...want.keys()].sort());
      for (const [name, t] of want) {
        const g = got.get(name)!;
        expect([g.type, g.dims], `${src} ${type} ${name}`).to.deep.equal([t.type, t.dims]);
        expect(Buffer.compare(g.data, t.data), `${src} ${type} ${name} bytes`).to.equal(0);
      }
      expect(r.tensors).to.equal(want.size);
      // and it runs as the generator's file does
      const a = await loadModel(out), b = await loadModel(files[`gguf-${type}`]!);
      const ids = [1, 200, 300, 17, 45, 399];
      expect(Array.from(await a.forwardAll(ids))).to.deep.equal(Array.from(await b.forwardAll(ids)));
      expect(a.tokenizer.encode('hello world, once upon a time')).to.deep.equal(b.tokenizer.encode('hello world, once upon a time'));
      a.dispose();
      b.dispose();
    }
  });

  it('npx sparq compress --out FILE.gguf --quantize q4_0 / q8_0 on the stories model: loads, same tokenizer, close logits', async function () {
    if (!fs.existsSync(MODEL)) throw new Error(`the bundled model is missing: ${MODEL}`);
    const run = (...a: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'lib/cli.ts', ...a], { cwd: ROOT, encoding: 'utf8' });
    const f32 = await loadModel(MODEL, { tokenizer: TOK });
    const text = 'Once upon a time, there was a little girl named Lily.';
    const ids = f32.tokenizer.encode(text);
    const ref = await f32.forwardAll(ids);
    for (const [type, bound] of [['q8_0', 0.02], ['q4_0', 0.2]] as const) {
      const out = path.join(tmp, `stories-${type}.gguf`);
      const c = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', out, '--quantize', type, '--json');
      expect(c.status, c.stderr).to.equal(0);
      const r = JSON.parse(c.stdout) as { bytesOut: number; gguf: { types: Record<string, number> } };
      expect(r.bytesOut).to.equal(fs.statSync(out).size);
      expect(Object.keys(r.gguf.types)).to.include(type.toUpperCase());
      const m = await loadModel(out);
      expect(m.tokenizer.encode(text)).to.deep.equal(ids);
      expect(m.config.dim).to.equal(f32.config.dim);
      const logits = await m.forwardAll(ids);
      const err = relErr(logits, ref);
      console.log(`      ${type}: relative logit error vs f32 ${err.toExponential(2)}`);
      expect(err, type).to.be.below(bound);
      if (type === 'q4_0') {
        // its Q4_0 linears were repacked 16 rows at a time at load: saved, they hold the
        // file's blocks byte for byte, and the saved model gives the same logits bit for bit
        const saved = path.join(tmp, 'stories-q4_0.safetensors');
        await saveModel(m, saved);
        const blocks = new Set([...safetensorsOf(saved)].filter(([k]) => k.endsWith('.blocks')).map(([, v]) => hash(v)));
        const g = readGguf(out), bytes = fs.readFileSync(out);
        const of = (name: string) => { const t = g.tensors.get(name)!; return bytes.subarray(t.offset, t.offset + t.bytes); };
        for (let l = 0; l < m.config.layers; l++) {
          const b = (n: string) => `blk.${l}.${n}.weight`;
          // q, k and v are one fused linear in the model: their rows in that order
          expect(blocks.has(hash(Buffer.concat([of(b('attn_q')), of(b('attn_k')), of(b('attn_v'))]))), b('attn_qkv')).to.equal(true);
          for (const n of ['attn_output', 'ffn_gate', 'ffn_up']) expect(blocks.has(hash(of(b(n)))), b(n)).to.equal(true);
        }
        const back = await loadModel(saved);
        expect(Buffer.from((await back.forwardAll(ids)).buffer).equals(Buffer.from(logits.buffer)), 'saved Q4_0: logits bit for bit').to.equal(true);
        back.dispose();
      }
      m.dispose();
    }
    f32.dispose();
    const bad = run('compress', '--model', MODEL, '--tokenizer', TOK, '--out', path.join(tmp, 'x.gguf'), '--quantize', 'int8');
    expect(bad.status).to.not.equal(0);
    expect(bad.stderr).to.match(/compress to \.gguf takes --quantize f32\|f16\|q4_0/);
  });
});
