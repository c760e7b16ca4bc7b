// llama2c.ts - llama2.c checkpoints (the legacy "version 0" export that
// run.c reads): a 7 x int32 header, then f32 arrays in a fixed order. A
// negative vocab size means the classifier is stored separately (unshared).
import * as fs from 'node:fs';
import { regularFileSize } from './files';

export interface LayerOffsets {
  attnNorm: number; ffnNorm: number; wq: number; wk: number; wv: number; wo: number; w1: number; w2: number; w3: number;
}

export interface ParsedModel {
  config: {
    arch: 'llama'; dim: number; hidden: number; layers: number; heads: number; kvHeads: number; vocab: number;
    maxSeq: number; ropeTheta: number; normEps: number; tiedEmbeddings: boolean;
  };
  /** byte offsets of every weight in the file */
  weights: { embed: number; finalNorm: number; output: number; layers: LayerOffsets[] };
  fileBytes: number;
}

const HEADER = 28;

export function parseLlama2c(file: string): ParsedModel {
  const op = 'loadModel';
  const size = regularFileSize(file, op);
  if (size < HEADER) throw new RangeError(`${op}: ${file} is too short for a llama2.c checkpoint (${size} bytes)`);
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(HEADER);
  try {
    fs.readSync(fd, head, 0, HEADER, 0);
  } finally {
    fs.closeSync(fd);
  }
  const [dim, hidden, layers, heads, kvHeads, vocabSigned, maxSeq] = Array.from({ length: 7 }, (_, i) => head.readInt32LE(4 * i)) as [number, number, number, number, number, number, number];
  const vocab = Math.abs(vocabSigned), tied = vocabSigned > 0;
  const bad = (why: string) => new RangeError(`${op}: ${file} is not a llama2.c checkpoint, or is corrupted: ${why} ` +
    `(header dim=${dim} hidden=${hidden} layers=${layers} heads=${heads} kvHeads=${kvHeads} vocab=${vocabSigned} seqLen=${maxSeq})`);
  const lim = (v: number, hi: number) => Number.isInteger(v) && v >= 1 && v <= hi;
  if (!lim(dim, 1 << 16) || !lim(hidden, 1 << 18) || !lim(layers, 1024) || !lim(heads, 1024) || !lim(kvHeads, 1024) ||
      !lim(vocab, 1 << 22) || !lim(maxSeq, 1 << 22)) throw bad('a header field is out of range');
  if (dim % heads !== 0) throw bad('dim is not a multiple of heads');
  if (heads % kvHeads !== 0) throw bad('heads is not a multiple of kvHeads');
  const hd = dim / heads, kvd = kvHeads * hd;
  let p = HEADER;
  const take = (floats: number) => {
    const at = p;
    p += floats * 4;
    return at;
  };
  const embed = take(vocab * dim);
  const attnNorm = take(layers * dim), wq = take(layers * dim * dim), wk = take(layers * kvd * dim), wv = take(layers * kvd * dim);
  const wo = take(layers * dim * dim), ffnNorm = take(layers * dim);
  const w1 = take(layers * hidden * dim), w2 = take(layers * dim * hidden), w3 = take(layers * hidden * dim);
  const finalNorm = take(dim);
  take(maxSeq * hd);  // freq_cis_real, freq_cis_imag (unused: RoPE is computed)
  const output = tied ? embed : take(vocab * dim);
  if (p > size) throw bad(`the weights need ${p} bytes but the file has ${size} (truncated?)`);
  if (p < size) throw bad(`the file has ${size - p} bytes after the weights (wrong format?)`);
  const per = (base: number, floats: number) => Array.from({ length: layers }, (_, l) => base + l * floats * 4);
  const L = {
    attnNorm: per(attnNorm, dim), ffnNorm: per(ffnNorm, dim), wq: per(wq, dim * dim), wk: per(wk, kvd * dim), wv: per(wv, kvd * dim),
    wo: per(wo, dim * dim), w1: per(w1, hidden * dim), w2: per(w2, dim * hidden), w3: per(w3, hidden * dim),
  };
  return {
    config: { arch: 'llama', dim, hidden, layers, heads, kvHeads, vocab, maxSeq, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: tied },
    weights: {
      embed, finalNorm, output,
      layers: Array.from({ length: layers }, (_, l) => ({
        attnNorm: L.attnNorm[l]!, ffnNorm: L.ffnNorm[l]!, wq: L.wq[l]!, wk: L.wk[l]!, wv: L.wv[l]!, wo: L.wo[l]!, w1: L.w1[l]!, w2: L.w2[l]!, w3: L.w3[l]!,
      })),
    },
    fileBytes: size,
  };
}
