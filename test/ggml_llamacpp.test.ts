// sparq's GGUF quantizers write the blocks llama.cpp writes: every type against
// ggml's own quantizer (ggml_quantize_chunk, which llama_model_quantize runs per
// tensor) through an FFI, byte for byte, on random and awkward rows. Needs the
// peers `npm install --no-save node-llama-cpp@3 koffi` (not dependencies);
// skipped, saying so, without them.
import { expect } from 'chai';
import { Tensor } from '../lib/index';
import { loadNative } from '../lib/native';
import { ggmlTypes } from '../lib/model/gguf';
import { loadGgml, type GgmlLib } from '../scripts/ggml-ffi';
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
});
