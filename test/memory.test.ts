// Native memory is returned: by dispose() exactly, and by the finalizer.
import { expect } from 'chai';
import { Tensor, info, linear, quantize } from '../lib/index';

function mib(b: number): string {
  return `${(b / 2 ** 20).toFixed(1)} MiB`;
}

describe('memory', function () {
  this.timeout(300000);

  it('10,000 create/quantize/dispose cycles keep native memory exact and RSS flat (< 24 MiB growth)', async () => {
    const data = Tensor.rand([64, 256], { seed: 3 }).toArray();
    const cycle = () => {
      const w = Tensor.from(data, [64, 256]);
      const qw = quantize(w, { granularity: 'per-group', groupSize: 64 });
      void qw.values; // unpacked tensors are owned and freed by qw
      qw.dispose();
      w.dispose();
    };
    const base = info().allocatedBytes;
    const rss: number[] = [];
    for (let i = 0; i < 10000; i++) {
      cycle();
      if (i % 2000 === 1999) {
        global.gc?.();
        rss.push(process.memoryUsage().rss);
      }
    }
    console.log(`      native held: ${info().allocatedBytes - base} B extra; RSS after each 2,000 cycles: ${rss.map(mib).join(', ')}`);
    expect(info().allocatedBytes).to.equal(base);
    // after the allocator and V8 heap warm up (first 2,000 cycles), RSS must stay flat
    expect(rss[rss.length - 1]! - rss[0]!).to.be.below(16 * 2 ** 20);
  });

  it('ops free their scratch and outputs are freed by dispose', async () => {
    const x = Tensor.rand([9, 300]), w = Tensor.rand([70, 300]);
    const qw = quantize(w);
    const base = info().allocatedBytes;
    for (let i = 0; i < 200; i++) (await linear(x, qw)).dispose();
    for (let i = 0; i < 200; i++) (await linear(x, w)).dispose();
    expect(info().allocatedBytes).to.equal(base);
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
