// merge.ts - the pair-merge loop both BPE tokenizers share (tokenizer.ts:
// SentencePiece by score, bpe.ts: byte-level by merge rank).

/**
 * Merges the best adjacent pair of tokens (highest priority, leftmost on ties)
 * until none merges, in O(n log n): candidate pairs wait in a heap ordered by
 * (priority, position); a merge links its symbol to its neighbours and offers the
 * two new pairs; entries whose symbols changed since are skipped when they come
 * up. pair(a, b): the token a + b merge into and the merge's priority, or
 * undefined. SentencePiece: the merged piece's score (run.c); byte-level BPE:
 * minus the merge's rank.
 */
export function mergePairs(toks: number[], pair: (a: number, b: number) => { m: number; s: number } | undefined): number[] {
  const n = toks.length;
  if (n < 2) return toks;
  const id = Int32Array.from(toks), next = new Int32Array(n), prev = new Int32Array(n), ver = new Uint32Array(n);
  for (let i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
  interface Pair { s: number; l: number; r: number; m: number; vl: number; vr: number }
  const heap: Pair[] = [];
  const before = (a: Pair, b: Pair) => a.s > b.s || (a.s === b.s && a.l < b.l);
  const offer = (l: number, r: number) => {
    const p = pair(id[l]!, id[r]!);
    if (p === undefined) return;
    const e = { s: p.s, l, r, m: p.m, vl: ver[l]!, vr: ver[r]! };
    let i = heap.push(e) - 1;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!before(e, heap[up]!)) break;
      heap[i] = heap[up]!;
      i = up;
    }
    heap[i] = e;
  };
  const pop = (): Pair => {
    const top = heap[0]!, last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const a = 2 * i + 1, b = a + 1;
        let c = a;
        if (a >= heap.length) break;
        if (b < heap.length && before(heap[b]!, heap[a]!)) c = b;
        if (!before(heap[c]!, last)) break;
        heap[i] = heap[c]!;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  };
  for (let i = 0; i + 1 < n; i++) offer(i, i + 1);
  while (heap.length > 0) {
    const e = pop();
    if (ver[e.l] !== e.vl || ver[e.r] !== e.vr || next[e.l] !== e.r) continue;  // stale
    id[e.l] = e.m;
    ver[e.l]!++;
    ver[e.r]!++;
    next[e.l] = next[e.r]!;
    if (next[e.l]! >= 0) prev[next[e.l]!] = e.l;
    if (prev[e.l]! >= 0) offer(prev[e.l]!, e.l);
    if (next[e.l]! >= 0) offer(e.l, next[e.l]!);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(id[i]!);
  return out;
}
