// check.ts - type-checks against the installed package's .d.ts (run by tsc with
// moduleResolution node16 and bundler).
import { Tensor, linear, loadModel, quantize, type Model, type Info, info } from 'sparq';

async function run(): Promise<number> {
  const x: Tensor = Tensor.rand([2, 8]);
  const q = quantize(Tensor.rand([4, 8]), { granularity: 'per-channel' });
  const y: Tensor = await linear(x, q);
  const m: Model = await loadModel('m.bin', { tokenizer: 't.bin', device: 'cpu' });
  const i: Info = info();
  return y.shape[0]! + m.config.dim + i.threads;
}
void run;
