// sparq's GGUF quantizers write what llama.cpp writes: every type against ggml's
// own quantizer (ggml_quantize_chunk, which llama_model_quantize runs per tensor)
// through an FFI, byte for byte, on random and awkward rows; and whole files:
// `compress` beside llama_model_quantize from the same F32 GGUF, tensor types
// and bytes. Needs the peers `npm install --no-save node-llama-cpp@3 koffi`
// (not dependencies); skipped, saying so, without them.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tensor, loadModel } from '../lib/index';
import { loadNative } from '../lib/native';
import { ggmlTypes, readGguf } from '../lib/model/gguf';
import { writeGgufModel } from '../lib/model/gguf_write';
import { writeRandomModel } from '../lib/model/synth';
import { loadGgml, loadLlamaQuantize, type GgmlLib } from '../scripts/ggml-ffi';
import { compareQuantized, ggmlRows } from './ggml_rows';

describe('GGUF quantizers against llama.cpp (ggml_quantize_chunk)', function () {
  this.timeout(120000);
  let lib: GgmlLib;
  before(function () {
    const r = loadGgml();
    if (!r.lib) {
      console.log(`      (skipped: ${r.why})`);
      this.skip();
    }
    lib = r.lib!;
  });

  it('every type sparq writes is byte-identical to ggml\'s blocks, awkward rows included', () => {
    const nat = loadNative();
    for (const seed of [1, 2]) {
      for (const t of ggmlTypes().values()) {
        if (!t.quantized) continue;
        const k = t.block === 256 ? 768 : 352, { x, rows } = ggmlRows(k, seed * 101 + t.type);
        const xs = Tensor.from(x, [rows, k]);
        const st = nat.ggmlQuantize(xs._storage, xs._offset, t.type, rows, k, true);
        const ours = new Uint8Array(st.read(0, rows * (k / t.block) * t.bytes));
        st.dispose();
        xs.dispose();
        const r = compareQuantized(t, ours, lib.quantize(t.type, x, rows, k, ours.length));
        expect(r.sameBlocks, `${t.name} seed ${seed}: max dequantized difference ${r.maxDiff}`).to.equal(r.blocks);
      }
    }
  });

  it('compress writes the tensors llama_model_quantize writes (Q4_K_M mix, tied or not; Q4_0 / Q6_K / Q8_0 pure): same types, same bytes', async function () {
    const { quantize, why } = loadLlamaQuantize();
    if (!quantize) {
      console.log(`      (skipped: ${why})`);
      this.skip();
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-llq-'));
    try {
      // 8 layers: the mix's more-bits layers (0, 3, 6, 7) and the others; k = 256 and 512 rows
      for (const tied of [false, true]) {
        const f = writeRandomModel(path.join(dir, String(tied)), { dim: 256, hidden: 512, layers: 8, heads: 4, kvHeads: 2, vocab: 512, maxSeq: 64, seed: 3, tied }, ['gguf-f32'])['gguf-f32']!;
        const specs = tied ? [['q4_k_m', 15, false]] as const : [['q4_k_m', 15, false], ['q4_0', 2, true], ['q6_k', 18, true], ['q8_0', 7, true]] as const;
        for (const [spec, ftype, pure] of specs) {
          const a = path.join(dir, `llama-${spec}.gguf`), b = path.join(dir, `sparq-${spec}.gguf`);
          quantize!(f, a, ftype, pure);
          const m = await loadModel(f);
          await writeGgufModel(m, b, spec);
          m.dispose();
          const ga = readGguf(a), gb = readGguf(b), fa = fs.readFileSync(a), fb = fs.readFileSync(b);
          expect([...gb.tensors.keys()].sort(), `${spec} tied=${tied}: tensor names`).to.deep.equal([...ga.tensors.keys()].sort());
          for (const [name, ta] of ga.tensors) {
            const tb = gb.tensors.get(name)!;
            expect(tb.type, `${spec} tied=${tied}: ${name} type`).to.equal(ta.type);
            expect(Buffer.compare(fa.subarray(ta.offset, ta.offset + ta.bytes), fb.subarray(tb.offset, tb.offset + tb.bytes)), `${spec} tied=${tied}: ${name} bytes`).to.equal(0);
          }
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
