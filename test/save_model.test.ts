// saveModel -> loadModel round trips: f32, int8 (per channel, per group, static
// activation scales), int4, sparse (bitmask, csr, 2:4, int8 values) and
// structurally shrunk models come back with identical weights (saved again,
// byte for byte) and logits; damaged files give clear errors.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, pruneModel, quantizeModel, saveModel, type Model } from '../lib/index';
import { STORIES_MODEL as MODEL, STORIES_TOK as TOK, needStories } from './helpers';

const SEQ = [1, 403, 407, 261, 378, 430, 261, 1130 % 512, 365, 281, 395, 267, 384, 286, 268, 415];

/** name -> dtype, shape and bytes of every tensor of a safetensors file */
function tensorsOf(file: string): Map<string, Buffer> {
  const buf = fs.readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const head = JSON.parse(buf.subarray(8, 8 + len).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(head)) {
    if (k === '__metadata__') continue;
    out.set(k, Buffer.concat([Buffer.from(`${v.dtype}[${v.shape.join(',')}]`), buf.subarray(8 + len + v.data_offsets[0], 8 + len + v.data_offsets[1])]));
  }
  return out;
}

describe('saveModel / loadModel round trip: stories260K', function () {
  this.timeout(300000);
  let dense: Model, tmp: string;

  before(async function () {
    needStories(this);
    dense = await loadModel(MODEL, { tokenizer: TOK });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-save-'));
  });
  after(() => {
    dense?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const roundTrip = async (name: string, make: () => Promise<Model>) => {
    const m = await make();
    const file = path.join(tmp, `${name.replace(/\W+/g, '_')}.safetensors`);
    try {
      await saveModel(m, file);
      const back = await loadModel(file);
      try {
        expect(back.config, name).to.deep.equal(m.config);
        const a = await m.forwardAll(SEQ), b = await back.forwardAll(SEQ);
        expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer)), `${name}: logits bit for bit`).to.equal(true);
        expect(back.tokenizer.encode('Once upon a time')).to.deep.equal(m.tokenizer.encode('Once upon a time'));
        expect(back.stopIds).to.deep.equal(m.stopIds);
        // the weights themselves: the loaded model saves the same tensors, byte for byte
        const again = file.replace(/\.safetensors$/, '.again.safetensors');
        await saveModel(back, again);
        const a1 = tensorsOf(file), a2 = tensorsOf(again);
        expect([...a2.keys()], name).to.deep.equal([...a1.keys()]);
        for (const [k, v] of a1) expect(a2.get(k)!.equals(v), `${name}: ${k}`).to.equal(true);
      } finally {
        back.dispose();
      }
      return fs.statSync(file).size;
    } finally {
      if (m !== dense) m.dispose();
    }
  };

  it('f32, int8, int4 and quantizeModel outputs (groups, static scales, SmoothQuant, GPTQ) come back bit-exactly', async () => {
    const calib = [[1, 403, 407, 261, 378, 430, 261, 365, 281, 395, 267, 384, 286, 268]];
    const sizes: Record<string, number> = {};
    sizes.f32 = await roundTrip('f32', async () => dense);
    sizes.int8 = await roundTrip('int8', () => loadModel(MODEL, { tokenizer: TOK, weights: 'int8' }));
    sizes.g32 = await roundTrip('int8 g32 static smoothquant', () => quantizeModel(dense, { weights: { granularity: { groupSize: 32 } }, smoothQuant: { alpha: 0.5 }, activations: { static: 'per-tensor', observer: 'mse' }, calibration: calib }));
    sizes.keep = await roundTrip('int8 keep output f32', () => quantizeModel(dense, { keepFloat: ['output', 'layers.1.w2'] }));
    sizes.int4 = await roundTrip('int4 g32 gptq', () => quantizeModel(dense, { weights: { bits: 4 }, gptq: {}, calibration: calib }));
    expect(sizes.int4).to.be.below(sizes.int8);
    expect(sizes.int8).to.be.below(sizes.f32 / 2);
  });

  it('pruned models (bitmask, csr, 2:4, int8 values, fewer heads and FFN channels) come back bit-exactly', async () => {
    const calib = [[1, 403, 407, 261, 378, 430, 261, 365, 281, 395, 267, 384, 286, 268]];
    await roundTrip('wanda bitmask', () => pruneModel(dense, { sparsity: 0.5, calibration: calib }));
    await roundTrip('csr int8', () => pruneModel(dense, { sparsity: 0.9, format: 'csr', weights: 'int8' }));
    await roundTrip('2:4 int8', () => pruneModel(dense, { pattern: '2:4', weights: 'int8' }));
    await roundTrip('heads and ffn', () => pruneModel(dense, { structured: { heads: 0.5, ffn: 0.25 }, calibration: calib }));
    // a saved pruned model is not pruned again from "its file"
    const p = await pruneModel(dense, { sparsity: 0.5, calibration: calib });
    const file = path.join(tmp, 'again.safetensors');
    await saveModel(p, file);
    p.dispose();
    const back = await loadModel(file);
    let err: Error | undefined;
    try { await pruneModel(back, { sparsity: 0.5 }); } catch (e) { err = e as Error; }
    back.dispose();
    expect(err?.message).to.match(/must come from loadModel/);
  });

  it('saves land whole: through symlinks, never over devices or unrelated files, concurrent saves of one path each complete', async () => {
    const q = await quantizeModel(dense, {});
    try {
      // a symlink is written through (the link stays a link)
      const real = path.join(tmp, 'real.safetensors'), link = path.join(tmp, 'link.safetensors');
      fs.writeFileSync(real, 'old');
      fs.symlinkSync(real, link);
      await saveModel(dense, link);
      expect(fs.lstatSync(link).isSymbolicLink()).to.equal(true);
      (await loadModel(real)).dispose();
      // a file named like a temporary one is left alone
      const target = path.join(tmp, 'target.safetensors');
      fs.writeFileSync(`${target}.tmp`, 'keep');
      await saveModel(dense, target);
      expect(fs.readFileSync(`${target}.tmp`, 'utf8')).to.equal('keep');
      // something that is not a regular file is refused before anything is written
      let err: Error | undefined;
      try { await saveModel(dense, '/dev/null'); } catch (e) { err = e as Error; }
      expect(err).to.be.instanceOf(TypeError);
      expect(err!.message).to.match(/not a regular file/);
      // concurrent saves of two models to one path: each resolves, the file is one of them whole
      const both = path.join(tmp, 'both.safetensors');
      await Promise.all([saveModel(dense, both), saveModel(q, both), saveModel(dense, both), saveModel(q, both)]);
      const back = await loadModel(both);
      const a = await back.forwardAll(SEQ), d = await dense.forwardAll(SEQ), b = await q.forwardAll(SEQ);
      back.dispose();
      const same = (x: Float32Array, y: Float32Array) => Buffer.from(x.buffer).equals(Buffer.from(y.buffer));
      expect(same(a, d) || same(a, b)).to.equal(true);
      expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).to.deep.equal([]);
    } finally {
      q.dispose();
    }
  });

  it('damaged files give clear errors, never a crash', async () => {
    const p = await pruneModel(dense, { sparsity: 0.5, weights: 'int8', calibration: [[1, 403, 407, 261]] });
    const file = path.join(tmp, 'ok.safetensors');
    await saveModel(p, file);
    p.dispose();
    const buf = fs.readFileSync(file);
    const len = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
    const at = (name: string) => 8 + len + header[name]!.data_offsets[0];
    const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
      ['truncated', (b) => b.subarray(0, b.length - 100), /truncated|do not match/],
      ['mask bits flipped', (b) => { const c = Buffer.from(b); c[at('layers.0.wqkv.mask')] ^= 0x01; return c; }, /mask bits do not match/],
      ['row pointer decreasing', (b) => { const c = Buffer.from(b); c.writeBigInt64LE(-5n, at('layers.1.w2.row_ptr') + 8); return c; }, /row pointers/],
      ['int8 -128', (b) => { const c = Buffer.from(b); c[at('layers.2.wo.values')] = 0x80; return c; }, /\[-127, 127\]/],
      ['metadata garbled', (b) => { const c = Buffer.from(b); const i = c.indexOf('"sparq.config"'); c[i + 18] = 0x7b; return c; }, /not JSON|must be/],
    ];
    // metadata entries that are valid JSON of the wrong kind
    const withMeta = (key: string, value: string) => (b: Buffer) => {
      const h = JSON.parse(b.subarray(8, 8 + len).toString('utf8')) as { __metadata__: Record<string, string> };
      h.__metadata__[key] = value;
      const text = Buffer.from(JSON.stringify(h)), n = Buffer.alloc(8);
      n.writeBigUInt64LE(BigInt(text.length));
      return Buffer.concat([n, text, b.subarray(8 + len)]);
    };
    for (const key of ['sparq.config', 'sparq.tokenizer', 'sparq.linears']) cases.push([`${key} null`, withMeta(key, 'null'), new RegExp(`metadata ${key} must be a JSON object`)]);
    cases.push(['sparq.stop an object', withMeta('sparq.stop', '{}'), /metadata sparq.stop must be a JSON array/]);
    for (const [name, damage, re] of cases) {
      const f = path.join(tmp, `bad.safetensors`);
      fs.writeFileSync(f, damage(buf));
      let err: Error | undefined;
      try { (await loadModel(f)).dispose(); } catch (e) { err = e as Error; }
      expect(err?.message, name).to.match(re);
    }
    // csr columns that do not increase
    const c = await pruneModel(dense, { sparsity: 0.9, format: 'csr' });
    const cfile = path.join(tmp, 'csr.safetensors');
    await saveModel(c, cfile);
    c.dispose();
    const cb = fs.readFileSync(cfile), clen = Number(cb.readBigUInt64LE(0));
    const ch = JSON.parse(cb.subarray(8, 8 + clen).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
    const colAt = 8 + clen + ch['layers.0.wo.col']!.data_offsets[0];
    cb.writeUInt16LE(cb.readUInt16LE(colAt), colAt + 2);  // the second column repeats the first
    fs.writeFileSync(cfile, cb);
    let err: Error | undefined;
    try { (await loadModel(cfile)).dispose(); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/columns must increase/);
    err = undefined;
    try { await saveModel(dense, path.join(tmp, 'no', 'such', 'dir', 'x.safetensors')); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/cannot write/);
  });
});
