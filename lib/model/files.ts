// files.ts - what every loader checks before it opens a path: a regular file
// (a FIFO, device or socket can block the thread or never end), and for files
// read whole (tokenizers, JSON), a size bound.
import * as fs from 'node:fs';

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}

/** The size of `file`, which must be a regular file. */
export function regularFileSize(file: string, op: string): number {
  const st = fs.statSync(file);
  if (!st.isFile()) throw new TypeError(`${op}: ${file} is not a regular file (${kindOf(st)})`);
  return st.size;
}

/** A whole regular file of at most `max` bytes (`what` names it in the error). */
export function readBoundedFile(file: string, op: string, what: string, max = 1 << 30): Buffer {
  const size = regularFileSize(file, op);
  if (size > max) throw new RangeError(`${op}: ${file} is ${size} bytes, more than a ${what} can hold (at most ${max})`);
  return fs.readFileSync(file);
}
