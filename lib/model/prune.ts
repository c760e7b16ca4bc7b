// prune.ts - pruneModel(): prunes every linear of a loaded model (magnitude or
// Wanda, unstructured or N:M) and/or shrinks it structurally (FFN channels,
// attention head groups), and returns a new Model over the result. Weights are
// re-read from the model's file in f32; Wanda's activation norms come from
// running the calibration text through the model itself (one pass, dense).
// See docs/DESIGN.md ("Pruning a model").
import { checkOptions, describe } from '../errors';
import { loadNative, type NativePacked, type NativeQ4, type NativeSparse } from '../native';
import { quantize } from '../quantize';
import { prune, SparseTensor, type SparseFormat } from '../sparse';
import { Tensor } from '../tensor';
import { createFromPlan, DEFAULT_KV_CACHE, layerExtras, type LayerRefs, type Model, type Plan, type PruneReport, type WeightRef } from './model';
import { Rebuild, calibrationSequences } from './rebuild';

export interface PruneModelOptions {
  /** 'magnitude' (|W|) or 'wanda' (|W| x the input channel's activation norm; needs calibration). Default 'wanda' with calibration, else 'magnitude'. */
  method?: 'magnitude' | 'wanda';
  /** unstructured: fraction of each linear's weights set to zero (default 0.5 unless only structured pruning is asked for) */
  sparsity?: number;
  /** 'unstructured' (default), '2:4' or '4:8' */
  pattern?: 'unstructured' | '2:4' | '4:8';
  /** unstructured: compare scores per linear, per output row, or (magnitude) over all the model's pruned linears at once
   *  (default: 'row' for Wanda, 'layer' for magnitude) */
  granularity?: 'layer' | 'row' | 'global';
  /** sparse storage (default: 'nm' for N:M, 'csr' at >= 80% sparsity, else 'bitmask') */
  format?: SparseFormat;
  /** values of the pruned model's linears (default: the source model's): f32, int8 (one scale per row),
   *  or int4 (bitmask and N:M storage; one f16 scale per row and `groupSize` columns) */
  weights?: 'f32' | 'int8' | 'int4';
  /** int4 values: columns per scale, 32, 64 (default) or 128 */
  groupSize?: number;
  /** calibration text (encoded with BOS) or token id arrays: Wanda's activation norms, and the structured scores */
  calibration?: readonly (string | readonly number[])[];
  /** tokens per calibration sequence at most (default min(maxSeq, 512)) */
  calibrationTokens?: number;
  /** structured pruning: fractions removed - of the FFN channels, and of the attention head groups (a kv head with its query heads) */
  structured?: { ffn?: number; heads?: number };
  onProgress?: (p: { stage: 'calibrate' | 'load' | 'prune'; done: number; total: number }) => void;
}

const OP = 'pruneModel';

function fraction(name: string, v: unknown): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw new RangeError(`${OP}: ${name} must be in [0, 1); got ${describe(v)}`);
  return v;
}

/** The indices of the `keep` highest scores, in increasing order (ties: the lower index). */
function topIndices(score: Float64Array, keep: number): number[] {
  const order = Array.from(score.keys()).sort((a, b) => score[b]! - score[a]! || a - b);
  return order.slice(0, keep).sort((a, b) => a - b);
}

/** f32 [rows.length * block, k]: blocks of `block` rows of w [n, k] at the given block indices. */
function takeRows(w: Float32Array, k: number, idx: readonly number[], block: number): Tensor {
  const out = new Float32Array(idx.length * block * k);
  idx.forEach((r, i) => out.set(w.subarray(r * block * k, (r + 1) * block * k), i * block * k));
  return Tensor.from(out, [idx.length * block, k]);
}

/** f32 [n, cols.length * block]: blocks of `block` columns of w [n, k]. */
function takeCols(w: Float32Array, n: number, k: number, idx: readonly number[], block: number): Tensor {
  const kk = idx.length * block, out = new Float32Array(n * kk);
  for (let j = 0; j < n; j++) idx.forEach((c, i) => out.set(w.subarray(j * k + c * block, j * k + (c + 1) * block), j * kk + i * block));
  return Tensor.from(out, [n, kk]);
}

/** @internal
 * The magnitude below which `count` of the weights of all `ts` lie: |w| as f32 bits
 * orders like the values, so a histogram of the top 16 bits finds the bucket and a
 * sort of that bucket the exact value; `ties` weights equal to it go too.
 */
export function globalThreshold(ts: Tensor[], count: number): { t: number; ties: number } {
  if (count <= 0) return { t: -Infinity, ties: 0 };
  const hist = new Float64Array(65536);
  const bitsOf = (t: Tensor) => { const a = t.toArray() as Float32Array; return new Uint32Array(a.buffer, a.byteOffset, a.length); };
  for (const t of ts) { const u = bitsOf(t); for (let i = 0; i < u.length; i++) hist[(u[i]! & 0x7fffffff) >>> 16]++; }
  let below = 0, b = 0;
  for (; b < 65535 && below + hist[b]! < count; b++) below += hist[b]!;
  const inBucket: number[] = [];
  for (const t of ts) {
    const u = bitsOf(t), f = new Float32Array(u.buffer, u.byteOffset, u.length);
    for (let i = 0; i < u.length; i++) if ((u[i]! & 0x7fffffff) >>> 16 === b) inBucket.push(Math.abs(f[i]!));
  }
  inBucket.sort((x, y) => x - y);
  const t = inBucket[count - below - 1]!;
  let less = 0;
  while (less < inBucket.length && inBucket[less]! < t) less++;
  return { t, ties: below + less < count ? count - below - less : 0 };
}

function l2(v: Float32Array, start: number, count: number, stride = 1): number {
  let s = 0;
  for (let i = 0; i < count; i++) s += v[start + i * stride]! ** 2;
  return Math.sqrt(s);
}

/**
 * Prunes a model loaded with loadModel(): every linear of every layer (q, k, v, o,
 * gate, up, down; the classifier and embeddings stay dense) and returns a new Model
 * that generates like any other; `pruned.pruneReport` gives each linear's sparsity and
 * the bytes saved. The source model stays usable (its context is reset by calibration).
 */
export async function pruneModel(model: Model, opts: PruneModelOptions = {}): Promise<Model> {
  checkOptions(OP, opts);
  const src = model._source;
  if (!src || src.derived) throw new TypeError(`${OP}: the model must come from loadModel() (it re-reads the weights from the file)`);
  const cal = opts.calibration;
  if (cal !== undefined && (!Array.isArray(cal) || cal.length === 0)) throw new TypeError(`${OP}: calibration must be a non-empty array of strings or token id arrays`);
  const method = opts.method ?? (cal ? 'wanda' : 'magnitude');
  if (method !== 'magnitude' && method !== 'wanda') throw new TypeError(`${OP}: method must be 'magnitude' or 'wanda'; got ${describe(method)}`);
  if (method === 'wanda' && !cal) throw new TypeError(`${OP}: method 'wanda' needs calibration (texts or token id arrays)`);
  const pattern = opts.pattern ?? 'unstructured';
  if (pattern !== 'unstructured' && pattern !== '2:4' && pattern !== '4:8') throw new TypeError(`${OP}: pattern must be 'unstructured', '2:4' or '4:8'; got ${describe(pattern)}`);
  const st = opts.structured ?? {};
  if (typeof st !== 'object' || st === null) throw new TypeError(`${OP}: structured must be an object`);
  const ffnFrac = fraction('structured.ffn', st.ffn), headFrac = fraction('structured.heads', st.heads);
  const structuredOnly = (ffnFrac > 0 || headFrac > 0) && opts.sparsity === undefined && opts.pattern === undefined;
  const sparsity = pattern !== 'unstructured' ? 0.5 : structuredOnly ? 0 : opts.sparsity ?? 0.5;
  if (pattern === 'unstructured' && !(typeof sparsity === 'number' && sparsity >= 0 && sparsity <= 1)) throw new RangeError(`${OP}: sparsity must be in [0, 1]; got ${describe(opts.sparsity)}`);
  if (pattern !== 'unstructured' && opts.sparsity !== undefined) throw new RangeError(`${OP}: pattern ${pattern} fixes the sparsity; leave sparsity out`);
  const weights = opts.weights ?? src.opts.weights ?? 'f32';
  if (weights !== 'f32' && weights !== 'int8' && weights !== 'int4') throw new TypeError(`${OP}: weights must be 'f32', 'int8' or 'int4'; got ${describe(weights)}`);
  const groupSize = opts.groupSize ?? 64;
  if (opts.groupSize !== undefined && weights !== 'int4') throw new TypeError(`${OP}: groupSize applies to weights 'int4'`);
  if (![32, 64, 128].includes(groupSize)) throw new RangeError(`${OP}: groupSize must be 32, 64 or 128; got ${describe(opts.groupSize)}`);
  const granularity = opts.granularity;
  if (granularity !== undefined && granularity !== 'layer' && granularity !== 'row' && granularity !== 'global') throw new TypeError(`${OP}: granularity must be 'layer', 'row' or 'global'; got ${describe(granularity)}`);
  if (granularity === 'global' && (method !== 'magnitude' || pattern !== 'unstructured')) throw new RangeError(`${OP}: granularity 'global' applies to unstructured magnitude pruning (Wanda scores of different layers are not comparable)`);
  // int4 values never go to csr (its columns cost 2-4 bytes a value)
  const format: SparseFormat = opts.format ?? (pattern !== 'unstructured' ? 'nm' : sparsity >= 0.8 && weights !== 'int4' ? 'csr' : 'bitmask');
  if (weights === 'int4' && format === 'csr') throw new TypeError(`${OP}: weights 'int4' need the bitmask or nm format`);
  const progress = opts.onProgress ?? (() => undefined);
  const c = model.config;
  const { dim, layers } = c;
  const hd = c.headDim, qd = c.heads * hd, kvd = c.kvHeads * hd, group = c.heads / c.kvHeads;

  // 1. activation norms (per layer: attention in [dim], o in [qd], FFN in [dim], down in [hidden])
  let norms: Float64Array | null = null;
  if (cal) {
    const seqs = calibrationSequences(OP, model, cal, opts.calibrationTokens);
    progress({ stage: 'calibrate', done: 0, total: seqs.length });
    norms = (await model._calibrate(seqs)).norms;
    progress({ stage: 'calibrate', done: seqs.length, total: seqs.length });
  }
  const stride = 2 * dim + qd + c.hidden;
  const normOf = (l: number, part: 'attn' | 'o' | 'ffn' | 'down'): Float64Array | null => {
    if (!norms) return null;
    const at = l * stride + { attn: 0, o: dim, ffn: dim + qd, down: 2 * dim + qd }[part];
    return norms.subarray(at, at + { attn: dim, o: qd, ffn: dim, down: c.hidden }[part]);
  };

  // 2. the weights, in f32
  const rb = await Rebuild.open(OP, model, progress);
  const plan = rb.plan;
  const own = <T extends { dispose(): void }>(x: T): T => rb.own(x);
  const tensorOf = (ref: WeightRef | undefined, n: number, k: number): Tensor => rb.tensor(ref, n, k);

  const report: PruneReport = { method, pattern: pattern === 'unstructured' ? `unstructured ${sparsity}` : pattern, layers: [], sparsity: 0, bytes: 0, denseBytes: 0, bytesSaved: 0 };
  let zeros = 0, total = 0;
  let cut: { t: number; ties: number } | null = null;
  // the reference a layer's bytes are compared with: the unpruned shape, dense (int8: values + one f32 scale per row;
  // int4: dense int4 as stored, rows of whole 32-value blocks at two values a byte + one f32 scale per group)
  const denseBytes = (n: number, k: number) =>
    weights === 'int8' ? n * k + 4 * n : weights === 'int4' ? n * Math.ceil(k / 32) * 16 + 4 * n * Math.ceil(k / groupSize) : 4 * n * k;
  const quantizeSw = (sw: SparseTensor) => (weights === 'int8' ? quantize(sw) : weights === 'int4' ? quantize(sw, { bits: 4, groupSize }) : sw);
  const keepKv = headFrac > 0 ? Math.max(1, c.kvHeads - Math.round(headFrac * c.kvHeads)) : c.kvHeads;
  const hidden = ffnFrac > 0 ? Math.max(1, c.hidden - Math.round(ffnFrac * c.hidden)) : c.hidden;
  if (ffnFrac > 0) report.hidden = [c.hidden, hidden];
  if (headFrac > 0) {
    report.heads = [c.heads, keepKv * group];
    report.kvHeads = [c.kvHeads, keepKv];
  }

  try {
    // one linear -> what createModel takes (sparse, packed int8 or f32), recorded in the report
    const finish = async (name: string, w: Tensor, origN: number, origK: number, act: Float64Array | null): Promise<SparseTensor | Tensor | NativePacked | NativeQ4> => {
      const [n, k] = w.shape as [number, number];
      const entry = { name, shape: [n, k] as [number, number], sparsity: 0, format: 'dense', bytes: 0, denseBytes: denseBytes(origN, origK) };
      let out: SparseTensor | Tensor | NativePacked | NativeQ4;
      if (sparsity > 0 && cut) {
        // global: zero what is below the model-wide threshold (ties in layer order), keep the rest
        const v = w.toArray() as Float32Array;
        for (let i = 0; i < v.length; i++) {
          const a = Math.abs(v[i]!);
          if (a < cut.t || (a === cut.t && cut.ties > 0 && cut.ties--)) v[i] = 0;
        }
        const masked = Tensor.from(v, [n, k]);
        const sw = prune(masked, { sparsity: 0, format });
        masked.dispose();
        const q = own(quantizeSw(sw));
        entry.sparsity = sw.sparsity;
        entry.format = sw.format;
        entry.bytes = q.bytes;
        if (q !== sw) sw.dispose();  // intermediates are released as soon as they are used
        out = q;
      } else if (sparsity > 0) {
        const sw = prune(w, {
          method, format, ...(pattern === 'unstructured' ? { sparsity, granularity: granularity as 'layer' | 'row' | undefined } : { pattern }),
          ...(method === 'wanda' ? { activationNorms: Float32Array.from(act!) } : {}),
        });
        const v = own(quantizeSw(sw));
        entry.sparsity = sw.sparsity;
        entry.format = sw.format;
        entry.bytes = v.bytes;
        if (v !== sw) sw.dispose();
        out = v;
      } else if (weights === 'int4') {
        const q = own(await loadNative().q4Quantize(w._storage, w._offset, n, k, groupSize));
        entry.bytes = loadNative().linearStoredBytes(q);
        out = q;
      } else if (weights === 'int8') {
        const q = own(quantize(w));
        entry.bytes = loadNative().linearStoredBytes(q._packed);
        out = q._packed;
      } else {
        entry.bytes = 4 * n * k;
        out = w;
      }
      zeros += Math.round(entry.sparsity * n * k);
      total += n * k;
      report.layers.push(entry);
      report.bytes += entry.bytes;
      report.denseBytes += entry.denseBytes;
      return out;
    };
    const ref = (x: SparseTensor | Tensor | NativePacked | NativeQ4): WeightRef => (x instanceof Tensor ? { storage: x._storage, offset: x._offset } : x instanceof SparseTensor ? x._check(OP) : x as WeightRef);
    // the createModel entry for a group of linears sharing an input (fused when all are sparse or all f32)
    const fuse = (parts: (SparseTensor | Tensor | NativePacked | NativeQ4)[]): WeightRef | WeightRef[] => {
      if (parts.every((p) => p instanceof Tensor)) {
        const ts = parts as Tensor[], k = ts[0]!.shape[1]!;
        const all = new Float32Array(ts.reduce((a, t) => a + t.numel, 0));
        let at = 0;
        for (const t of ts) { all.set(t.toArray() as Float32Array, at); at += t.numel; }
        const f = own(Tensor.from(all, [all.length / k, k]));
        return { storage: f._storage, offset: f._offset };
      }
      if (parts.every((p) => p instanceof SparseTensor)) {
        const cat = own(loadNative().sparseConcat(parts.map((p) => (p as SparseTensor)._check(OP)))) as NativeSparse;
        for (const p of parts) (p as SparseTensor).dispose();  // concatenated: the parts are copies no longer used
        return cat;
      }
      return parts.map(ref);
    };

    // 1. every layer's linears, shrunk by structured pruning when asked
    interface Shrunk { L: LayerRefs; extras: ReturnType<typeof layerExtras>; wq: Tensor; wk: Tensor; wv: Tensor; wo: Tensor; w1: Tensor; w3: Tensor; w2: Tensor; oNorm: Float64Array | null; downNorm: Float64Array | null }
    const shrunk: Shrunk[] = [];
    for (let l = 0; l < layers; l++) {
      const L = plan.weights.layers[l]!;
      let wq: Tensor, wk: Tensor, wv: Tensor, w1: Tensor, w3: Tensor;
      if (L.wqkv) {
        const t = tensorOf(L.wqkv, qd + 2 * kvd, dim);
        [wq, wk, wv] = [own(t.slice(0, qd)), own(t.slice(qd, qd + kvd)), own(t.slice(qd + kvd))];
      } else [wq, wk, wv] = [tensorOf(L.wq, qd, dim), tensorOf(L.wk, kvd, dim), tensorOf(L.wv, kvd, dim)];
      if (L.w13) {
        const t = tensorOf(L.w13, 2 * c.hidden, dim);
        [w1, w3] = [own(t.slice(0, c.hidden)), own(t.slice(c.hidden))];
      } else [w1, w3] = [tensorOf(L.w1, c.hidden, dim), tensorOf(L.w3, c.hidden, dim)];
      let wo = tensorOf(L.wo, dim, qd), w2 = tensorOf(L.w2, dim, c.hidden);
      let oNorm = normOf(l, 'o'), downNorm = normOf(l, 'down');
      const extras = layerExtras(L);  // biases and q / k head norms ([headDim]: the same for every head)

      if (ffnFrac > 0) {
        // channel j's contribution to the output is h_j * w2[:, j]: score ||h_j|| * ||w2[:, j]||
        // (without calibration ||w1_j|| * ||w3_j|| stands in for ||h_j||)
        const a1 = w1.toArray() as Float32Array, a3 = w3.toArray() as Float32Array, a2 = w2.toArray() as Float32Array;
        const score = new Float64Array(c.hidden);
        for (let j = 0; j < c.hidden; j++) score[j] = (downNorm ? downNorm[j]! : l2(a1, j * dim, dim) * l2(a3, j * dim, dim)) * l2(a2, j, dim, c.hidden);
        const keep = topIndices(score, hidden);
        [w1, w3, w2] = [own(takeRows(a1, dim, keep, 1)), own(takeRows(a3, dim, keep, 1)), own(takeCols(a2, dim, c.hidden, keep, 1))];
        if (downNorm) downNorm = Float64Array.from(keep, (j) => downNorm![j]!);
      }
      if (headFrac > 0) {
        // a head group's contribution is its output columns of wo: score sum over them of ||o_c|| * ||wo[:, c]||
        // (without calibration ||v rows of the kv head|| stands in for ||o_c||)
        const aq = wq.toArray() as Float32Array, ak = wk.toArray() as Float32Array, av = wv.toArray() as Float32Array, ao = wo.toArray() as Float32Array;
        const score = new Float64Array(c.kvHeads);
        for (let u = 0; u < c.kvHeads; u++) {
          const vNorm = l2(av, u * hd * dim, hd * dim);
          for (let col = u * group * hd; col < (u + 1) * group * hd; col++) score[u] += (oNorm ? oNorm[col]! : vNorm) * l2(ao, col, dim, qd);
        }
        const keep = topIndices(score, keepKv);
        const qHeads = keep.flatMap((u) => Array.from({ length: group }, (_, g) => u * group + g));
        [wq, wk, wv, wo] = [own(takeRows(aq, dim, qHeads, hd)), own(takeRows(ak, dim, keep, hd)), own(takeRows(av, dim, keep, hd)), own(takeCols(ao, dim, qd, qHeads, hd))];
        if (oNorm) oNorm = Float64Array.from({ length: qHeads.length * hd }, (_, i) => oNorm![qHeads[Math.floor(i / hd)]! * hd + (i % hd)]!);
        if (L.bq) {  // the kept heads' biases
          const slice = (b: WeightRef | undefined, n: number, heads: number[]) => {
            const a = tensorOf(b, 1, n).toArray() as Float32Array;
            return ref(own(takeRows(a, 1, heads, hd)));
          };
          [extras.bq, extras.bk, extras.bv] = [slice(L.bq, qd, qHeads), slice(L.bk, kvd, keep), slice(L.bv, kvd, keep)];
        }
      }
      shrunk.push({ L, extras, wq, wk, wv, wo, w1, w3, w2, oNorm, downNorm });
    }
    // 2. global magnitude: the model-wide threshold
    if (granularity === 'global' && sparsity > 0) {
      const all = shrunk.flatMap((x) => [x.wq, x.wk, x.wv, x.wo, x.w1, x.w3, x.w2]);
      cut = globalThreshold(all, Math.round(sparsity * all.reduce((a, t) => a + t.numel, 0)));
    }
    // 3. prune, quantize, fuse
    const newLayers: LayerRefs[] = [];
    for (let l = 0; l < layers; l++) {
      progress({ stage: 'prune', done: l, total: layers });
      const { L, extras, wq, wk, wv, wo, w1, w3, w2, oNorm, downNorm } = shrunk[l]!;
      const an = normOf(l, 'attn'), fn = normOf(l, 'ffn');
      const qkv = fuse([await finish(`layers.${l}.wq`, wq, qd, dim, an), await finish(`layers.${l}.wk`, wk, kvd, dim, an), await finish(`layers.${l}.wv`, wv, kvd, dim, an)]);
      const o = await finish(`layers.${l}.wo`, wo, dim, qd, oNorm);
      const gu = fuse([await finish(`layers.${l}.w1`, w1, c.hidden, dim, fn), await finish(`layers.${l}.w3`, w3, c.hidden, dim, fn)]);
      const down = await finish(`layers.${l}.w2`, w2, dim, c.hidden, downNorm);
      newLayers.push({
        ...extras, attnNorm: L.attnNorm, ffnNorm: L.ffnNorm, wo: ref(o), w2: ref(down),
        ...(Array.isArray(qkv) ? { wq: qkv[0], wk: qkv[1], wv: qkv[2] } : { wqkv: qkv }),
        ...(Array.isArray(gu) ? { w1: gu[0], w3: gu[1] } : { w13: gu }),
      });
    }
    progress({ stage: 'prune', done: layers, total: layers });
    report.sparsity = total ? zeros / total : 0;
    report.bytesSaved = report.denseBytes - report.bytes;

    // the classifier stays dense, in the requested value type
    let output = plan.weights.output;
    if (weights === 'int8' && 'storage' in output) output = own(quantize(tensorOf(output, c.vocab, dim)))._packed;
    if (weights === 'int4' && 'storage' in output) {
      const ot = tensorOf(output, c.vocab, dim);
      output = own(await loadNative().q4Quantize(ot._storage, ot._offset, c.vocab, dim, groupSize)) as unknown as WeightRef;
    }
    const heads = keepKv * group;
    const newPlan: Plan = {
      ...plan,
      config: { ...plan.config, hidden, heads, kvHeads: keepKv },
      weights: { ...plan.weights, output, layers: newLayers },
    };
    const pruned = await createFromPlan(newPlan, c.maxSeq, src.opts.kvCache ?? DEFAULT_KV_CACHE, { ...src, derived: true }, headFrac > 0 ? hd : undefined);
    pruned.pruneReport = report;
    return pruned;
  } finally {
    rb.close();
  }
}
