// Native memory is returned: by dispose() exactly, and by the finalizer.
import { expect } from 'chai';
import { Tensor, info, linear, quantize } from '../lib/index';
import { runChild, ROOT } from './helpers';

function mib(b: number): string {
  return `${(b / 2 ** 20).toFixed(1)} MiB`;
}

// Native bytes held once finalizers of earlier garbage have run.
async function settled(): Promise<number> {
  let prev = -1;
  for (let i = 0; i < 50; i++) {
    global.gc?.();
    await new Promise((r) => setImmediate(r));
    const now = info().allocatedBytes;
    if (now === prev) return now;
    prev = now;
  }
  return prev;
}

describe('memory', function () {
  this.timeout(300000);

  it('10,000 create/quantize/dispose cycles keep native memory exact and RSS bounded (< 48 MiB growth after warm-up)', () => {
    // In a fresh process, so other tests' garbage does not move the RSS.
    const r = runChild(`
      const { Tensor, info, quantize } = require('./lib/index');
      const data = Tensor.rand([64, 256], { seed: 3 }).toArray();
      const cycle = () => {
        const w = Tensor.from(data, [64, 256]);
        const qw = quantize(w, { granularity: 'per-group', groupSize: 64 });
        void qw.values; // unpacked tensors are owned and freed by qw
        qw.dispose();
        w.dispose();
      };
      const base = info().allocatedBytes, rss = [];
      for (let i = 0; i < 10000; i++) {
        cycle();
        if (i % 2000 === 1999) { global.gc(); rss.push(process.memoryUsage().rss); }
      }
      console.log(JSON.stringify({ extra: info().allocatedBytes - base, rss }));`, {}, ROOT, ['--expose-gc']);
    expect(r.status, r.stderr).to.equal(0);
    const { extra, rss } = JSON.parse(r.stdout) as { extra: number; rss: number[] };
    console.log(`      native held: ${extra} B extra; RSS after each 2,000 cycles: ${rss.map(mib).join(', ')}`);
    expect(extra).to.equal(0);
    // After the first 2,000 cycles RSS may still step up once or twice as the C
    // allocator opens per-thread arenas, then stays flat; a leak of one
    // quantized weight per cycle (>= 16 KiB) would add over 120 MiB here.
    expect(rss[rss.length - 1]! - rss[0]!).to.be.below(48 * 2 ** 20);
  });

  it('ops free their scratch and outputs are freed by dispose', async () => {
    const x = Tensor.rand([9, 300]), w = Tensor.rand([70, 300]);
    const qw = quantize(w);
    const base = await settled();
    for (let i = 0; i < 200; i++) (await linear(x, qw)).dispose();
    for (let i = 0; i < 200; i++) (await linear(x, w)).dispose();
    expect(await settled()).to.equal(base);
    x.dispose(); w.dispose(); qw.dispose();
  });

  it('the finalizer frees tensors that were never disposed', async function () {
    if (!global.gc) {
      console.log('      (skipped: needs node --expose-gc)');
      this.skip();
    }
    const base = info().allocatedBytes;
    for (let i = 0; i < 200; i++) Tensor.zeros([256, 1024]); // 1 MiB each, dropped
    for (let r = 0; r < 10 && info().allocatedBytes > base + 8 * 2 ** 20; r++) {
      global.gc!();
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(info().allocatedBytes - base).to.be.below(8 * 2 ** 20);
  });
});
