// quantize_model.ts - quantizeModel(): int8 weights (per channel or per group)
// for every linear of a loaded model, with dynamic per-token activations or
// static per-tensor activation scales calibrated by an observer, optional
// SmoothQuant, and linears kept in f32 by name. Weights are re-read from the
// model's file in f32. See docs/DESIGN.md ("Quantizing a model").
import { checkOptions, describe } from '../errors';
import type { NativePacked, NativeQ4 } from '../native';
import { Observer, quantize, type ObserverMethod } from '../quantize';
import { Tensor } from '../tensor';
import { loadNative } from '../native';
import { createFromPlan, DEFAULT_KV_CACHE, layerExtras, type CalibrationStats, type LayerRefs, type Model, type Plan, type WeightRef } from './model';
import { Rebuild, calibrationSequences } from './rebuild';

export interface QuantizeModelOptions {
  /** int8 weights, one scale per output channel (default) or per group of `groupSize` (32, 64 or 128) along k;
   *  or int4 (bits: 4, two per byte) per group (default 32), dynamic activations only */
  weights?: { bits?: 8 | 4; granularity?: 'per-channel' | { groupSize: number } };
  /** 'dynamic-per-token' (default: each row's scale at run time), or one static scale per linear input from calibration */
  activations?: 'dynamic-per-token' | { static: 'per-tensor'; observer?: ObserverMethod; percentile?: number };
  /** SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) per input channel of q|k|v and gate|up, folded into the RMSNorm weights */
  smoothQuant?: { alpha?: number };
  /** GPTQ: each linear's rounding error pushed onto its not yet quantized columns through the inverse
   *  Hessian of its calibration inputs (dampening: added to H's diagonal as a fraction of its mean, default 0.01) */
  gptq?: { dampening?: number; blockSize?: number };
  /** linears left in f32: 'output', 'layers.3' (every linear of a layer), 'layers.3.w2', or 'w2' (in every layer) */
  keepFloat?: readonly string[];
  /** calibration text (encoded with BOS) or token id arrays: needed by SmoothQuant and static activations */
  calibration?: readonly (string | readonly number[])[];
  /** tokens per calibration sequence at most (default min(maxSeq, 512)) */
  calibrationTokens?: number;
  onProgress?: (p: { stage: 'calibrate' | 'load' | 'quantize'; done: number; total: number }) => void;
}

/** What quantizeModel() did, per linear and in total. */
export interface QuantizeReport {
  weights: string;
  activations: string;
  smoothQuantAlpha?: number;
  layers: { name: string; shape: [number, number]; format: string; bytes: number; activationScale?: number;
    /** gptq: tr((Q - W) H (Q - W)^T) over the calibration inputs, and the same for round-to-nearest */
    gptqError?: number; rtnError?: number }[];
  /** gptq: the summed reconstruction error over the calibration inputs, and round-to-nearest's */
  gptq?: { error: number; rtnError: number; dampening: number };
  /** bytes of the linears as stored, and as f32 */
  bytes: number;
  f32Bytes: number;
}

const OP = 'quantizeModel';
const NAMES = ['wq', 'wk', 'wv', 'wo', 'w1', 'w3', 'w2'] as const;
type LinearName = (typeof NAMES)[number];
// which calibration input (0 attention, 1 o, 2 FFN, 3 down) feeds each linear
const INPUT: Record<LinearName, number> = { wq: 0, wk: 0, wv: 0, wo: 1, w1: 2, w3: 2, w2: 3 };

/**
 * Quantizes a model loaded with loadModel() and returns a new Model that generates
 * like any other; `q.quantizeReport` lists each linear's format and bytes.
 */
export async function quantizeModel(model: Model, opts: QuantizeModelOptions = {}): Promise<Model> {
  checkOptions(OP, opts);
  const src = model._source;
  if (!src || src.derived) throw new TypeError(`${OP}: the model must come from loadModel() (it re-reads the weights from the file)`);
  const gptq = opts.gptq;
  if (gptq !== undefined && (typeof gptq !== 'object' || gptq === null)) throw new TypeError(`${OP}: gptq must be an object`);
  const damp = gptq?.dampening ?? 0.01;
  if (!(typeof damp === 'number' && damp >= 0 && damp < 1)) throw new RangeError(`${OP}: gptq.dampening must be in [0, 1); got ${describe(damp)}`);
  const w = opts.weights ?? {};
  if (typeof w !== 'object' || w === null) throw new TypeError(`${OP}: weights must be an object`);
  const bits = w.bits ?? 8;
  if (bits !== 8 && bits !== 4) throw new RangeError(`${OP}: weights.bits must be 8 or 4; got ${describe(w.bits)}`);
  const gran = w.granularity ?? (bits === 4 ? { groupSize: 32 } : 'per-channel');
  if (bits === 4 && gran === 'per-channel') throw new RangeError(`${OP}: 4-bit weights take a group size (32, 64 or 128), not per-channel scales`);
  let groupSize = 0;
  if (gran !== 'per-channel') {
    if (typeof gran !== 'object' || gran === null || ![32, 64, 128].includes(gran.groupSize)) {
      throw new RangeError(`${OP}: weights.granularity must be 'per-channel' or { groupSize: 32 | 64 | 128 }; got ${describe(gran)}`);
    }
    groupSize = gran.groupSize;
  }
  const act = opts.activations ?? 'dynamic-per-token';
  let observer: ObserverMethod | null = null, percentile: number | undefined;
  if (act !== 'dynamic-per-token') {
    if (typeof act !== 'object' || act === null || act.static !== 'per-tensor') throw new TypeError(`${OP}: activations must be 'dynamic-per-token' or { static: 'per-tensor', observer }`);
    observer = act.observer ?? 'minmax';
    if (!['minmax', 'percentile', 'mse'].includes(observer)) throw new TypeError(`${OP}: activations.observer must be 'minmax', 'percentile' or 'mse'; got ${describe(observer)}`);
    percentile = act.percentile;
    if (bits === 4) throw new RangeError(`${OP}: 4-bit weights run with dynamic activations only`);
  }
  const alpha = opts.smoothQuant ? opts.smoothQuant.alpha ?? 0.5 : null;
  if (alpha !== null && !(typeof alpha === 'number' && alpha >= 0 && alpha <= 1)) throw new RangeError(`${OP}: smoothQuant.alpha must be in [0, 1]; got ${describe(alpha)}`);
  const cal = opts.calibration;
  if (cal !== undefined && (!Array.isArray(cal) || cal.length === 0)) throw new TypeError(`${OP}: calibration must be a non-empty array of strings or token id arrays`);
  if ((alpha !== null || observer || gptq) && !cal) throw new TypeError(`${OP}: ${alpha !== null ? 'smoothQuant' : observer ? 'static activations' : 'gptq'} need calibration (texts or token id arrays)`);
  const keep = opts.keepFloat ?? [];
  if (!Array.isArray(keep) || keep.some((k) => typeof k !== 'string')) throw new TypeError(`${OP}: keepFloat must be an array of names`);
  const c = model.config;
  const { dim, layers } = c;
  for (const k of keep) {
    const ok = k === 'output' || (NAMES as readonly string[]).includes(k) || /^layers\.\d+(\.(wq|wk|wv|wo|w1|w3|w2))?$/.test(k);
    const l = /^layers\.(\d+)/.exec(k);
    if (!ok || (l && Number(l[1]) >= layers)) throw new RangeError(`${OP}: keepFloat entry '${k}' names no linear (use 'output', 'layers.N', 'layers.N.wq' .. 'w2', or 'wq' .. 'w2')`);
  }
  const isFloat = (l: number, n: LinearName) => keep.includes(n) || keep.includes(`layers.${l}`) || keep.includes(`layers.${l}.${n}`);
  const progress = opts.onProgress ?? (() => undefined);
  const hd = c.headDim, qd = c.heads * hd, kvd = c.kvHeads * hd;
  const seqs = cal ? calibrationSequences(OP, model, cal, opts.calibrationTokens) : [];

  const rb = await Rebuild.open(OP, model, progress);
  const plan = rb.plan;
  const own = <T extends { dispose(): void }>(x: T): T => rb.own(x);
  const tensorOf = (ref: WeightRef | undefined, n: number, k: number): Tensor => rb.tensor(ref, n, k);
  const stride = 2 * dim + qd + c.hidden;
  const featAt = (l: number, input: number) => l * stride + [0, dim, dim + qd, 2 * dim + qd][input]!;
  const widthOf = (input: number) => [dim, qd, dim, c.hidden][input]!;

  try {
    // 1. SmoothQuant: per-channel input statistics of the dense model (the factors follow per layer)
    let stats: CalibrationStats | null = null;
    if (alpha !== null) {
      progress({ stage: 'calibrate', done: 0, total: seqs.length });
      stats = await model._calibrate(seqs);
    }
    // per layer, the SmoothQuant factors of the attention and FFN inputs (GPTQ rescales its Hessians by them)
    const smooth: { attn: Float64Array; ffn: Float64Array }[] = [];

    // 2. one layer's f32 linears (copies: SmoothQuant scales their columns) and norms, made when
    // the layer is quantized and dropped after it, so only one layer's copies exist at a time
    interface Layer { L: LayerRefs; w: Record<LinearName, Float32Array>; attnNorm: Float32Array; ffnNorm: Float32Array }
    const rowsOf: Record<LinearName, number> = { wq: qd, wk: kvd, wv: kvd, wo: dim, w1: c.hidden, w3: c.hidden, w2: dim };
    const colsOf: Record<LinearName, number> = { wq: dim, wk: dim, wv: dim, wo: qd, w1: dim, w3: dim, w2: c.hidden };
    // a planned weight's f32 values (the view of a dequantized one is released at once)
    const valuesOf = (ref: WeightRef | undefined, n: number, k: number) => {
      const dequantized = ref !== undefined && !('storage' in ref);
      const t = tensorOf(ref, n, k), a = t.toArray() as Float32Array;
      if (dequantized) t.dispose();
      return a;
    };
    const layerAt = (l: number): Layer => {
      const L = plan.weights.layers[l]!;
      const w = {} as Record<LinearName, Float32Array>;
      if (L.wqkv) {
        const a = valuesOf(L.wqkv, qd + 2 * kvd, dim);
        [w.wq, w.wk, w.wv] = [a.subarray(0, qd * dim), a.subarray(qd * dim, (qd + kvd) * dim), a.subarray((qd + kvd) * dim)];
      } else for (const n of ['wq', 'wk', 'wv'] as const) w[n] = valuesOf(L[n], rowsOf[n], colsOf[n]);
      if (L.w13) {
        const a = valuesOf(L.w13, 2 * c.hidden, dim);
        [w.w1, w.w3] = [a.subarray(0, c.hidden * dim), a.subarray(c.hidden * dim)];
      } else for (const n of ['w1', 'w3'] as const) w[n] = valuesOf(L[n], rowsOf[n], colsOf[n]);
      for (const n of ['wo', 'w2'] as const) w[n] = valuesOf(L[n], rowsOf[n], colsOf[n]);
      const x: Layer = { L, w, attnNorm: valuesOf(L.attnNorm, 1, dim), ffnNorm: valuesOf(L.ffnNorm, 1, dim) };
      if (stats) {
        // migrate activation outliers of the q|k|v and gate|up inputs into the weights
        smooth[l] = { attn: new Float64Array(dim).fill(1), ffn: new Float64Array(dim).fill(1) };
        for (const [input, names, norm] of [[0, ['wq', 'wk', 'wv'], x.attnNorm], [2, ['w1', 'w3'], x.ffnNorm]] as const) {
          const at = featAt(l, input);
          const sv = input === 0 ? smooth[l]!.attn : smooth[l]!.ffn;
          for (let j = 0; j < dim; j++) {
            let wmax = 0;
            for (const n of names) for (let r = 0; r < rowsOf[n]; r++) wmax = Math.max(wmax, Math.abs(x.w[n][r * dim + j]!));
            const amax = stats.amax[at + j]!;
            const s = amax > 0 && wmax > 0 ? Math.max(1e-5, amax ** alpha! / wmax ** (1 - alpha!)) : 1;
            norm[j] = norm[j]! / s;
            sv[j] = s;
            for (const n of names) for (let r = 0; r < rowsOf[n]; r++) x.w[n][r * dim + j] = x.w[n][r * dim + j]! * s;
          }
        }
      }
      return x;
    };

    // f32 refs of the (possibly smoothed) weights: fused where the source model fuses
    const refOf = (a: Float32Array, n: number, k: number): WeightRef => {
      const t = own(Tensor.from(a, [n, k]));
      return { storage: t._storage, offset: t._offset };
    };
    const cat = (...as: Float32Array[]) => { const o = new Float32Array(as.reduce((s, a) => s + a.length, 0)); let p = 0; for (const a of as) { o.set(a, p); p += a.length; } return o; };

    // 3. static activation scales: calibrate the (smoothed) f32 model, per linear input
    let actScale: ((l: number, input: number) => number) | null = null;
    if (observer) {
      let probe: Model = model;
      if (alpha !== null) {
        // the smoothed model in f32: its linears' inputs are what the int8 model will see
        const fp: Plan = { ...plan, weights: { ...plan.weights, layers: Array.from({ length: layers }, (_, l) => {
          const x = layerAt(l);
          return {
            ...layerExtras(x.L), attnNorm: refOf(x.attnNorm, 1, dim), ffnNorm: refOf(x.ffnNorm, 1, dim),
            wqkv: refOf(cat(x.w.wq, x.w.wk, x.w.wv), qd + 2 * kvd, dim), wo: refOf(x.w.wo, dim, qd),
            w13: refOf(cat(x.w.w1, x.w.w3), 2 * c.hidden, dim), w2: refOf(x.w.w2, dim, c.hidden),
          };
        }) } };
        probe = await createFromPlan(fp, c.maxSeq, 'f32', { ...src, derived: true });
      }
      try {
        progress({ stage: 'calibrate', done: 0, total: seqs.length });
        const first = await probe._calibrate(seqs);
        const bins = 2048;
        let hist: Float64Array | null = null;
        if (observer !== 'minmax') {
          const ranges = new Float32Array(layers * 8);
          for (let i = 0; i < layers * 4; i++) { ranges[2 * i] = Math.min(first.lo[i]!, 0); ranges[2 * i + 1] = Math.max(first.hi[i]!, 0); }
          hist = (await probe._calibrate(seqs, { ranges, bins })).hist!;
        }
        const tokens = seqs.reduce((a, s) => a + s.length, 0);
        const scales = new Float64Array(layers * 4);
        for (let i = 0; i < layers * 4; i++) {
          const o = Observer._from({ method: observer, percentile, bins }, first.lo[i]!, first.hi[i]!, hist ? hist.subarray(i * bins, (i + 1) * bins) : null, tokens * widthOf(i % 4));
          scales[i] = o.compute().scale;
        }
        actScale = (l, input) => scales[l * 4 + input]!;
      } finally {
        if (probe !== model) probe.dispose();
      }
      progress({ stage: 'calibrate', done: seqs.length, total: seqs.length });
    }

    // 4. quantize
    const report: QuantizeReport = {
      weights: (bits === 4 ? `int4 per group of ${groupSize}` : groupSize ? `int8 per group of ${groupSize}` : 'int8 per channel') + (gptq ? ' (GPTQ)' : ''),
      activations: observer ? `static per tensor (${observer})` : 'dynamic per token',
      ...(alpha !== null ? { smoothQuantAlpha: alpha } : {}), layers: [], bytes: 0, f32Bytes: 0,
    };
    const qopts = groupSize ? { granularity: 'per-group' as const, groupSize } : { granularity: 'per-channel' as const };
    // GPTQ: the Hessians (X^T X) of the current layer's four inputs, recorded one layer at a time
    let grams: Float64Array[] | null = null;
    const gptqErr = { gptq: 0, rtn: 0 };
    const linear = async (name: string, a: Float32Array, n: number, k: number, f32: boolean, scale: number | null, input = -1, layer = -1): Promise<WeightRef> => {
      report.f32Bytes += 4 * n * k;
      if (f32) {
        report.layers.push({ name, shape: [n, k], format: 'f32', bytes: 4 * n * k });
        report.bytes += 4 * n * k;
        return refOf(a, n, k);
      }
      const t = Tensor.from(a, [n, k]);  // released once quantized
      try {
        let packed: NativePacked | NativeQ4, extra = {};
        const nat = loadNative();
        // GPTQ: the Hessian of this input, in the smoothed coordinates when SmoothQuant moved it
        let h: Float64Array | null = null;
        if (grams && input >= 0) {
          h = grams[input]!;
          const sv = input === 0 ? smooth[layer]?.attn : input === 2 ? smooth[layer]?.ffn : undefined;
          if (sv) h = h.map((v, i) => v / (sv[Math.floor(i / k)]! * sv[i % k]!));
        }
        if (h) {
          const g = await nat.gptq(t._storage, t._offset, n, k, h, bits, groupSize, damp);
          packed = own(bits === 4 ? g.q4! : g.packed!);
          extra = { gptqError: g.error, rtnError: g.rtnError };
          gptqErr.gptq += g.error;
          gptqErr.rtn += g.rtnError;
        } else {
          packed = bits === 4 ? own(await nat.q4Quantize(t._storage, t._offset, n, k, groupSize)) : own(quantize(t, qopts))._packed;
        }
        const bytes = nat.linearStoredBytes(packed);
        report.layers.push({ name, shape: [n, k], format: report.weights, bytes, ...(scale !== null ? { activationScale: scale } : {}), ...extra });
        report.bytes += bytes;
        return scale !== null ? ({ packed, actScale: scale } as unknown as WeightRef) : (packed as WeightRef);
      } finally {
        t.dispose();
      }
    };
    const newLayers: LayerRefs[] = [];
    for (let l = 0; l < layers; l++) {
      progress({ stage: 'quantize', done: l, total: layers });
      const x = layerAt(l);
      if (gptq) {
        const g = (await model._calibrate(seqs, { gramLayer: l })).gram!;
        const sizes = [dim * dim, qd * qd, dim * dim, c.hidden * c.hidden];
        let at = 0;
        grams = sizes.map((sz) => { const v = g.subarray(at, at + sz); at += sz; return v; });
      }
      const sc = (n: LinearName) => (actScale ? actScale(l, INPUT[n]) : null);
      const one = (n: LinearName) => linear(`layers.${l}.${n}`, x.w[n], rowsOf[n], colsOf[n], isFloat(l, n), isFloat(l, n) ? null : sc(n), INPUT[n], l);
      const fusedQkv = !(['wq', 'wk', 'wv'] as const).some((n) => isFloat(l, n)) || (['wq', 'wk', 'wv'] as const).every((n) => isFloat(l, n));
      const fusedGu = isFloat(l, 'w1') === isFloat(l, 'w3');
      const entry: LayerRefs = {
        ...layerExtras(x.L),  // biases and q / k norms as they are (smoothing scales the inputs of the linears only)
        attnNorm: refOf(x.attnNorm, 1, dim), ffnNorm: refOf(x.ffnNorm, 1, dim), wo: await one('wo'), w2: await one('w2'),
        ...(fusedQkv ? { wqkv: await linear(`layers.${l}.wqkv`, cat(x.w.wq, x.w.wk, x.w.wv), qd + 2 * kvd, dim, isFloat(l, 'wq'), isFloat(l, 'wq') ? null : sc('wq'), 0, l) }
          : { wq: await one('wq'), wk: await one('wk'), wv: await one('wv') }),
        ...(fusedGu ? { w13: await linear(`layers.${l}.w13`, cat(x.w.w1, x.w.w3), 2 * c.hidden, dim, isFloat(l, 'w1'), isFloat(l, 'w1') ? null : sc('w1'), 2, l) }
          : { w1: await one('w1'), w3: await one('w3') }),
      };
      newLayers.push(entry);
    }
    progress({ stage: 'quantize', done: layers, total: layers });
    if (gptq) report.gptq = { error: gptqErr.gptq, rtnError: gptqErr.rtn, dampening: damp };
    // the classifier: int8 per channel with dynamic activations (its input is the final norm's
    // output, which calibration does not record), or f32
    let output = plan.weights.output;
    const outF32 = keep.includes('output');
    report.f32Bytes += 4 * c.vocab * dim;
    if (outF32) {
      if (!('storage' in output)) output = refOf(tensorOf(output, c.vocab, dim).toArray() as Float32Array, c.vocab, dim);
      report.layers.push({ name: 'output', shape: [c.vocab, dim], format: 'f32', bytes: 4 * c.vocab * dim });
      report.bytes += 4 * c.vocab * dim;
    } else {
      const ot = tensorOf(output, c.vocab, dim);
      output = bits === 4 ? own(await loadNative().q4Quantize(ot._storage, ot._offset, c.vocab, dim, groupSize)) as unknown as WeightRef : own(quantize(ot, qopts))._packed;
      const bytes = loadNative().linearStoredBytes(output as NativePacked | NativeQ4);
      report.layers.push({ name: 'output', shape: [c.vocab, dim], format: report.weights, bytes });
      report.bytes += bytes;
    }
    const q = await createFromPlan({ ...plan, weights: { ...plan.weights, output, layers: newLayers } }, c.maxSeq, src.opts.kvCache ?? DEFAULT_KV_CACHE, { ...src, derived: true });
    q.quantizeReport = report;
    return q;
  } finally {
    rb.close();
  }
}
