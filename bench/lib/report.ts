/**
 * Reporting for benchmarks: machine description, a plain-text table, JSON results files,
 * and a tiny CLI flag reader. No dependencies.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface MachineInfo {
  cpuModel: string;
  cpuCount: number;
  totalMemoryGiB: number;
  node: string;
  platform: string;
  release: string;
  arch: string;
  hostname: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuCount: cpus.length,
    totalMemoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    hostname: os.hostname(),
  };
}

/** One line: "Intel Xeon …, 2 cores, 23.4 GiB, Node v20.x, linux x64". */
export function describeMachine(m: MachineInfo = machineInfo()): string {
  return `${m.cpuModel}, ${m.cpuCount} cores, ${m.totalMemoryGiB} GiB RAM, Node ${m.node}, ${m.platform} ${m.arch}`;
}

/** Renders rows as an aligned text table (first row = header). Numbers are right-aligned. */
export function formatTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmtNum(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'));
  const line = (r: string[]) =>
    r
      .map((c, i) => (numeric[i] ? (c ?? '').padStart(widths[i]!) : (c ?? '').padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function printTable(header: string[], rows: (string | number)[][]): void {
  console.log(formatTable(header, rows));
}

function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  return x.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
}

/** Writes JSON (pretty, trailing newline), creating folders. Returns the absolute path. */
export function writeJson(file: string, data: unknown): string {
  const abs = path.resolve(file);
  mkdirSync(path.dirname(abs), { recursive: true });
  writeFileSync(abs, `${JSON.stringify(data, null, 2)}\n`);
  return abs;
}

/** "2025-01-31T12-34-56" (local time is avoided: UTC, file-name safe). */
export function fileStamp(d = new Date()): string {
  return d.toISOString().slice(0, 19).replace(/:/g, '-');
}

/** bench/results/<name>-<stamp>.json, relative to the current directory. */
export function defaultResultsPath(name: string, d = new Date()): string {
  return path.join('bench', 'results', `${name}-${fileStamp(d)}.json`);
}

/**
 * Reads `--flag value`, `--flag=value` and boolean `--flag` from argv. Flags named in
 * `valued` take a value; any other known flag is boolean. Unknown flags throw.
 */
export function parseFlags(
  argv: string[],
  spec: { valued: readonly string[]; boolean: readonly string[] },
): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const eq = a.indexOf('=');
    const name = a.slice(2, eq === -1 ? undefined : eq);
    if (spec.valued.includes(name)) {
      const v = eq === -1 ? argv[++i] : a.slice(eq + 1);
      if (v === undefined) throw new Error(`--${name} needs a value`);
      out[name] = v;
    } else if (spec.boolean.includes(name)) {
      if (eq !== -1) throw new Error(`--${name} takes no value`);
      out[name] = true;
    } else {
      throw new Error(`unknown flag --${name}`);
    }
  }
  return out;
}
