/** Results table, JSON file under bench/results/, machine info, argv flags. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './stack.js';

export interface Metric {
  id: string;
  metric: string;
  value: number;
  unit: string;
  /** Thresholds; `better` says which way is good. */
  must?: number;
  target?: number;
  better: 'higher' | 'lower' | 'equal';
  note?: string;
}

export function machineInfo() {
  let git: string | null;
  try {
    git = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    git = null;
  }
  return {
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    ramBytes: os.totalmem(),
    ramGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadavg: os.loadavg(),
    git,
  };
}

function passes(m: Metric, bound: number | undefined): boolean | null {
  if (bound === undefined || !Number.isFinite(m.value)) return bound === undefined ? null : false;
  if (m.better === 'higher') return m.value >= bound;
  if (m.better === 'lower') return m.value <= bound;
  return m.value === bound;
}

export function verdict(m: Metric): 'target' | 'must' | 'FAIL' | 'n/a' {
  const t = passes(m, m.target);
  const mu = passes(m, m.must);
  if (t === true) return 'target';
  if (mu === true || (mu === null && t === null)) return mu === null ? 'n/a' : 'must';
  return 'FAIL';
}

const fmt = (v: number | undefined, unit: string) =>
  v === undefined ? '-' : `${Number.isInteger(v) ? v : v.toFixed(v < 10 ? 3 : 1)}${unit ? ` ${unit}` : ''}`;

export function printTable(title: string, metrics: Metric[]): void {
  const sym = (m: Metric) => (m.better === 'higher' ? '≥ ' : m.better === 'lower' ? '≤ ' : '= ');
  const rows = metrics.map((m) => [
    m.id,
    m.metric,
    fmt(m.value, m.unit),
    m.must === undefined ? '-' : sym(m) + fmt(m.must, m.unit),
    m.target === undefined ? '-' : sym(m) + fmt(m.target, m.unit),
    verdict(m),
  ]);
  const head = ['id', 'metric', 'value', 'must', 'target', 'result'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n${title}`);
  console.log(line(head));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(line(r));
  for (const m of metrics) if (m.note) console.log(`  ${m.id}: ${m.note}`);
}

/** Writes bench/results/<name>-<date>.json (or under BENCH_RESULTS_DIR) and returns its path. */
export function writeResults(
  name: string,
  data: { quick: boolean; params: Record<string, unknown>; metrics: Metric[]; details?: unknown },
): string {
  const dir = process.env.BENCH_RESULTS_DIR
    ? path.resolve(process.env.BENCH_RESULTS_DIR)
    : path.join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(dir, `${name}${data.quick ? '-quick' : ''}-${stamp}.json`);
  const out = {
    name,
    date: new Date().toISOString(),
    machine: machineInfo(),
    ...data,
    metrics: data.metrics.map((m) => ({ ...m, result: verdict(m) })),
  };
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  console.log(`\nresults: ${file.startsWith(ROOT) ? path.relative(ROOT, file) : file}`);
  return file;
}

export function flag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}

export function option(name: string): string | undefined {
  const i = process.argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i === -1) return undefined;
  const a = process.argv[i]!;
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : process.argv[i + 1];
}

export function numOption(name: string, dflt: number): number {
  const v = option(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} wants a number, got ${v}`);
  return n;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

export const round = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;
