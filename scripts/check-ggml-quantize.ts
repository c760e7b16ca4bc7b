// check-ggml-quantize.ts - sparq's GGUF quantizers against ggml's own
// (llama.cpp's llama_model_quantize calls ggml_quantize_chunk per tensor):
// per type, the share of blocks written byte-identical and the largest
// difference of their dequantized values, on random rows and awkward ones
// (zeros, a constant, one outlier, tiny and huge magnitudes).
//   npm install --no-save node-llama-cpp@3 koffi
//   node --import tsx scripts/check-ggml-quantize.ts
import { Tensor } from '../lib/index';
import { loadNative } from '../lib/native';
import { ggmlTypes } from '../lib/model/gguf';
import { loadGgml } from './ggml-ffi';
import { ggmlRows, compareQuantized } from '../test/ggml_rows';

const { lib, why } = loadGgml();
if (!lib) {
  console.error(`check-ggml-quantize: ${why}`);
  process.exit(2);
}
console.log(`ggml: ${lib.path}`);
const nat = loadNative();
let bad = 0;
for (const t of ggmlTypes().values()) {
  if (!t.quantized) continue;
  const k = t.block === 256 ? 1024 : 512, { x, rows } = ggmlRows(k, 7);
  const xs = Tensor.from(x, [rows, k]);
  const ours = new Uint8Array(nat.ggmlQuantize(xs._storage, xs._offset, t.type, rows, k, true).read(0, rows * (k / t.block) * t.bytes));
  const theirs = lib.quantize(t.type, x, rows, k, ours.length);
  const r = compareQuantized(t, ours, theirs);
  if (r.sameBlocks < r.blocks) bad++;
  console.log(`${t.name.padEnd(7)} ${r.sameBlocks}/${r.blocks} blocks identical, max |dequantized difference| ${r.maxDiff.toExponential(2)}`);
  xs.dispose();
}
process.exit(bad ? 1 : 0);
