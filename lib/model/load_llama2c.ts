// load_llama2c.ts - planLlama2c(): the weights of a llama2.c checkpoint, with its tokenizer.bin.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readBoundedFile } from './files';
import { parseLlama2c, type ParsedModel } from './llama2c';
import { Tokenizer } from './tokenizer';
import { WeightReader, type LayerRefs, type Plan } from './load_plan';
import type { LoadModelOptions } from './model';

export async function planLlama2c(file: string, opts: LoadModelOptions): Promise<Plan> {
  const parsed: ParsedModel = parseLlama2c(file);
  const tokPath = opts.tokenizer ?? path.join(path.dirname(file), 'tokenizer.bin');
  if (!fs.existsSync(tokPath)) throw new Error(`loadModel: llama2.c checkpoints need a tokenizer: pass { tokenizer: 'path/to/tokenizer.bin' } (${tokPath} does not exist)`);
  const tokBytes = readBoundedFile(tokPath, 'loadModel', 'tokenizer');
  let tokenizer: Tokenizer;
  try {
    tokenizer = Tokenizer.fromLlama2c(tokBytes, parsed.config.vocab);
  } catch (e) {
    throw new (e instanceof RangeError ? RangeError : Error)(`loadModel: ${tokPath}: ${(e as Error).message}`);
  }
  const { dim, hidden, vocab, kvHeads, heads } = parsed.config;
  const kvd = (kvHeads * dim) / heads;
  const r = new WeightReader(file, opts.weights === 'int8');
  const w = parsed.weights;
  const layers: LayerRefs[] = [];
  // f32 linears are used in place (mapped), so q|k|v and gate|up, which are not
  // adjacent in this layout, stay apart; int8 ones are converted, so fused
  const fuse = opts.weights === 'int8';
  for (const l of w.layers) {
    const L: LayerRefs = {
      attnNorm: await r.f32(l.attnNorm, dim), ffnNorm: await r.f32(l.ffnNorm, dim),
      wo: await r.linear([[l.wo, dim]], dim), w2: await r.linear([[l.w2, dim]], hidden),
    };
    if (fuse) [L.wqkv, L.w13] = [await r.linear([[l.wq, dim], [l.wk, kvd], [l.wv, kvd]], dim), await r.linear([[l.w1, hidden], [l.w3, hidden]], dim)];
    else [L.wq, L.wk, L.wv, L.w1, L.w3] = [await r.linear([[l.wq, dim]], dim), await r.linear([[l.wk, kvd]], dim), await r.linear([[l.wv, kvd]], dim),
      await r.linear([[l.w1, hidden]], dim), await r.linear([[l.w3, hidden]], dim)];
    layers.push(L);
  }
  const embed = await r.f32(w.embed, vocab * dim);
  return {
    config: parsed.config, tokenizer, stopIds: [tokenizer.bos], ropeNeox: false, temp: r.temp,
    weights: {
      embed, finalNorm: await r.f32(w.finalNorm, dim),
      // a tied classifier is the embedding itself (f32), or its int8 copy
      output: parsed.config.tiedEmbeddings && opts.weights !== 'int8' ? embed : await r.linear([[w.output, vocab]], dim),
      layers,
    },
  };
}
