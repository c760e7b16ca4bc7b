// harness.ts - timing and reporting shared by the benchmarks: warm-up,
// repeated samples, median and spread, JSON output.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { loadNative } from '../native';

export interface Sample {
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** (p90 - p10) / median, in % */
  spreadPct: number;
  p10Ms: number;
  p90Ms: number;
  reps: number;
  /** minor page faults (first touches of fresh memory) per timed call, the whole process */
  faultsPerCall: number;
}

/** Times `fn` (one call = one unit of work) after `warmup` calls, until `minTime` seconds
 *  and at least `minReps` samples. */
export async function measure(fn: (rep: number) => Promise<void>, minTime: number, minReps = 5, warmup = 2): Promise<Sample> {
  for (let i = 0; i < warmup; i++) await fn(i);
  const times: number[] = [];
  const faults0 = process.resourceUsage().minorPageFault;
  const start = process.hrtime.bigint();
  for (let rep = 0; ; rep++) {
    const t0 = process.hrtime.bigint();
    await fn(rep);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    if (times.length >= minReps && elapsed >= minTime) break;
    if (times.length >= 1000) break;
  }
  const faultsPerCall = (process.resourceUsage().minorPageFault - faults0) / times.length;
  times.sort((a, b) => a - b);
  const mid = times.length >> 1;
  const median = times.length % 2 ? times[mid]! : (times[mid - 1]! + times[mid]!) / 2;
  const pct = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  return {
    medianMs: median,
    minMs: times[0]!,
    maxMs: times[times.length - 1]!,
    p10Ms: pct(0.1),
    p90Ms: pct(0.9),
    spreadPct: (100 * (pct(0.9) - pct(0.1))) / median,
    reps: times.length,
    faultsPerCall,
  };
}

export function writeJson(file: string, data: unknown): string {
  const abs = path.resolve(file);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fs.writeFileSync(abs, JSON.stringify(data, null, 2) + '\n');
  return abs;
}

/** Right-aligned text table; `minWidth` keeps rows printed one at a time aligned. */
export function table(rows: Record<string, string | number>[], minWidth = 0): string {
  if (!rows.length) return '';
  const cols = Object.keys(rows[0]!);
  const cell = (v: string | number | undefined) => (typeof v === 'number' ? fmt(v) : (v ?? ''));
  const widths = cols.map((c) => Math.max(minWidth, c.length, ...rows.map((r) => String(cell(r[c])).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padStart(widths[i]!)).join('  ');
  return [line(cols), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(cell(r[c])))))].join('\n');
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return '-';
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** Runs `fn` and samples the process RSS every few ms while it works (it must run off
 *  the JS thread); returns the peak growth over the RSS at the start, in bytes. */
export async function rssGrowth(fn: () => Promise<void>): Promise<number> {
  (globalThis as { gc?: () => void }).gc?.();
  const before = process.memoryUsage.rss();
  let peak = before, done = false;
  const p = fn().finally(() => { done = true; });
  while (!done) {
    peak = Math.max(peak, process.memoryUsage.rss());
    await new Promise((r) => setTimeout(r, 2));
  }
  await p;
  return Math.max(peak, process.memoryUsage.rss()) - before;
}

/** What `ceilings()` measured (GOPS; 0: a unit this CPU lacks). */
export type Ceilings = Awaited<ReturnType<ReturnType<typeof loadNative>['ceilings']>>;

/** @internal The measured ceiling (GOPS) of a path key ('avx2', 'avxvnni', 'avx512vnni', 'f32-avx2', 'f32-avx512'); NaN where unmeasured (AMX, or a unit the CPU lacks). */
export function ceilingOf(c: Ceilings, key: string): number {
  const v = ({ avx2: c.int8Avx2Gops, avxvnni: c.int8AvxvnniGops, avx512vnni: c.int8Avx512vnniGops, 'f32-avx2': c.fp32Avx2Gops, 'f32-avx512': c.fp32Avx512Gops } as Record<string, number>)[key];
  return v !== undefined && v > 0 ? v : NaN;
}

/** @internal The measured ceilings as one line. */
export function ceilingsLine(c: Ceilings): string {
  const unit = (name: string, v: number) => (v > 0 ? `${name} ${v.toFixed(0)}` : `${name} -`);
  return `${[unit('fp32 FMA AVX2', c.fp32Avx2Gops), unit('AVX-512', c.fp32Avx512Gops), unit('int8 AVX2', c.int8Avx2Gops),
    unit('AVX-VNNI', c.int8AvxvnniGops), unit('AVX-512 VNNI', c.int8Avx512vnniGops)].join(', ')} GOPS ("-": not on this CPU; AMX unmeasured), DRAM read ${c.dramReadGBs.toFixed(1)} GB/s`;
}
