// forward64.ts - a float64 forward of sparq's GGUF llama (RMSNorm, interleaved-
// pair RoPE, GQA attention, SwiGLU) over a file's dequantized weights (the spec
// dequantizer of ggml_ref.ts), optionally with llama.cpp's activation contract
// emulated (each quantized matmul's input quantized as ggml quantizes it: Q8_0
// blocks of 32, Q8_K blocks of 256); and the top-10 logit deviation metric.
import * as fs from 'node:fs';
import { readGguf } from '../lib/model/gguf';
import type { SynthConfig } from '../lib/model/synth';
import { SPEC, dequantize, ggmlActBlock } from './ggml_ref';
import { roundEven } from './helpers';

interface Lin { w: Float64Array; n: number; k: number; act: number }  // act: 0 = f32 weight (no activation quantization)

function tensorOf(file: string, raw: Buffer, name: string): Lin {
  const t = readGguf(file).tensors.get(name)!;
  const count = t.dims.reduce((a, b) => a * b, 1), k = t.dims[0]!, n = count / k;
  const data = new Uint8Array(raw.subarray(t.offset, t.offset + t.bytes));
  if (SPEC[t.type]) return { w: Float64Array.from(dequantize(t.type, data, count / SPEC[t.type]!.block)), n, k, act: ggmlActBlock(t.type) };
  return { w: Float64Array.from(new Float32Array(data.buffer, data.byteOffset, count)), n, k, act: 0 };
}

/** x quantized per block of B as ggml's Q8_0 / Q8_K (d = max|x| / 127; Q8_K maps the signed max to -127: same magnitudes) */
function quantAct(x: Float64Array, B: number): Float64Array {
  if (!B) return x;
  const out = new Float64Array(x.length), f = Math.fround;
  for (let b = 0; b < x.length; b += B) {
    let amax = 0;
    for (let c = 0; c < B; c++) amax = Math.max(amax, Math.abs(f(x[b + c]!)));
    const d = f(amax / 127), id = amax > 0 ? f(127 / amax) : 0;
    for (let c = 0; c < B; c++) out[b + c] = Math.max(-127, Math.min(127, roundEven(f(f(x[b + c]!) * id)))) * d;
  }
  return out;
}

function matvec(L: Lin, x: Float64Array, emulate: boolean): Float64Array {
  const xa = emulate ? quantAct(x, L.act) : x, y = new Float64Array(L.n);
  for (let j = 0; j < L.n; j++) {
    let s = 0;
    for (let c = 0; c < L.k; c++) s += L.w[j * L.k + c]! * xa[c]!;
    y[j] = s;
  }
  return y;
}

/** float64 teacher-forced forward (sparq's GGUF llama: RMSNorm, interleaved-pair RoPE, GQA, SwiGLU); logits [T, vocab] */
export function forward64(file: string, cfg: SynthConfig, ids: readonly number[], emulate: boolean): Float64Array {
  const T = ids.length;
  const raw = fs.readFileSync(file);
  const get = (n: string) => tensorOf(file, raw, n);
  const { dim, layers, heads, kvHeads, vocab } = cfg, hd = dim / heads, eps = Math.fround(1e-5);
  const embed = get('token_embd.weight'), outW = readGguf(file).tensors.has('output.weight') ? get('output.weight') : embed, fnorm = get('output_norm.weight').w;
  const L = Array.from({ length: layers }, (_, l) => {
    const b = `blk.${l}.`;
    return { an: get(b + 'attn_norm.weight').w, fn: get(b + 'ffn_norm.weight').w, q: get(b + 'attn_q.weight'), k: get(b + 'attn_k.weight'),
      v: get(b + 'attn_v.weight'), o: get(b + 'attn_output.weight'), g: get(b + 'ffn_gate.weight'), u: get(b + 'ffn_up.weight'), d: get(b + 'ffn_down.weight') };
  });
  const norm = (x: Float64Array, w: Float64Array) => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const r = 1 / Math.sqrt(ss / x.length + eps);
    return x.map((v, i) => v * r * w[i]!);
  };
  const rope = (v: Float64Array, nh: number, pos: number) => {
    for (let h = 0; h < nh; h++)
      for (let i = 0; i < hd / 2; i++) {
        const a = pos * Math.pow(10000, (-2 * i) / hd), c = Math.cos(a), s = Math.sin(a);
        const x0 = v[h * hd + 2 * i]!, x1 = v[h * hd + 2 * i + 1]!;
        v[h * hd + 2 * i] = x0 * c - x1 * s;
        v[h * hd + 2 * i + 1] = x0 * s + x1 * c;
      }
  };
  const K: Float64Array[][] = L.map(() => []), V: Float64Array[][] = L.map(() => []);
  const logits = new Float64Array(T * vocab);
  for (let t = 0; t < T; t++) {
    let x = embed.w.slice(ids[t]! * dim, ids[t]! * dim + dim);
    L.forEach((ly, l) => {
      const xb = norm(x, ly.an);
      const q = matvec(ly.q, xb, emulate), k = matvec(ly.k, xb, emulate), v = matvec(ly.v, xb, emulate);
      rope(q, heads, t);
      rope(k, kvHeads, t);
      K[l]!.push(k);
      V[l]!.push(v);
      const att = new Float64Array(dim);
      for (let h = 0; h < heads; h++) {
        const kh = Math.floor(h / (heads / kvHeads)), sc = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let p = 0; p <= t; p++) {
          let s = 0;
          for (let c = 0; c < hd; c++) s += q[h * hd + c]! * K[l]![p]![kh * hd + c]!;
          sc[p] = s / Math.sqrt(hd);
          mx = Math.max(mx, sc[p]!);
        }
        let den = 0;
        for (let p = 0; p <= t; p++) den += (sc[p] = Math.exp(sc[p]! - mx));
        for (let p = 0; p <= t; p++) for (let c = 0; c < hd; c++) att[h * hd + c] += (sc[p]! / den) * V[l]![p]![kh * hd + c]!;
      }
      const o = matvec(ly.o, att, emulate);
      x = x.map((v2, i) => v2 + o[i]!);
      const xf = norm(x, ly.fn), g = matvec(ly.g, xf, emulate), u = matvec(ly.u, xf, emulate);
      const hbuf = g.map((a, i) => (a / (1 + Math.exp(-a))) * u[i]!);
      const dn = matvec(ly.d, hbuf, emulate);
      x = x.map((v2, i) => v2 + dn[i]!);
    });
    logits.set(matvec(outW, norm(x, fnorm), emulate), t * vocab);
  }
  return logits;
}

/** mean and max |a - ref| over each position's top-10 logits of ref */
export function top10Deviation(a: ArrayLike<number>, ref: Float64Array, vocab: number): { mean: number; max: number } {
  const T = ref.length / vocab;
  let sum = 0, cnt = 0, max = 0;
  for (let t = 0; t < T; t++) {
    const row = Array.from(ref.subarray(t * vocab, (t + 1) * vocab)).map((v, i) => [v, i] as const).sort((p, q) => q[0] - p[0]).slice(0, 10);
    for (const [, i] of row) {
      const d = Math.abs(a[t * vocab + i]! - ref[t * vocab + i]!);
      sum += d;
      cnt++;
      max = Math.max(max, d);
    }
  }
  return { mean: sum / cnt, max };
}

