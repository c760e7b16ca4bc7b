// save.ts - what Model.save() / saveModel() write: the sparq.* metadata (config,
// tokenizer, stop ids, compression reports) and where the file lands.
import * as fs from 'node:fs';
import type { Model } from './model';

/** The safetensors metadata of a saved model (its tensors are written natively). */
export function saveMetadata(model: Model): Record<string, string> {
  const spec = model.tokenizer.toSpec();
  return {
    'sparq.format': '1',
    'sparq.config': JSON.stringify({ ...model.config, ropeNeox: model._source.ropeNeox }),
    'sparq.tokenizer': JSON.stringify({ ...spec, pieces: spec.pieces.map((p) => Buffer.from(p).toString('base64')), scores: Array.from(spec.scores) }),
    'sparq.stop': JSON.stringify(model.stopIds),
    ...(model.pruneReport ? { 'sparq.prune': JSON.stringify(model.pruneReport) } : {}),
    ...(model.quantizeReport ? { 'sparq.quantize': JSON.stringify(model.quantizeReport) } : {}),
  };
}

/**
 * Where a save lands: through a symlink to its target, and only over a regular
 * file (the new file is renamed into place, which would replace a device node).
 */
export function saveTarget(file: string): string {
  let target = file;
  try {
    target = fs.realpathSync(file);
  } catch {
    return file;  // nothing there yet (or a dangling link: written as a new file)
  }
  const st = fs.statSync(target);
  if (!st.isFile()) throw new TypeError(`saveModel: ${file} exists and is not a regular file`);
  return target;
}
