/** CLI flags of the engine simulator. Pure parsing: no I/O, throws UsageError on bad input. */

export interface SimConfig {
  port: number;
  host: string;
  model: string;
  startupMs: number;
  ttftMs: number;
  tokensPerSecond: number;
  maxConcurrency: number;
  errorRate: number;
  seed: number;
  ignoreSigterm: boolean;
  crashAfter: number;
  outputTokens: number;
  maxModelLen: number;
  embeddingDim: number;
}

export class UsageError extends Error {}

export const USAGE = `usage: node --import tsx simulator/main.ts --port N --model NAME [--host H] [--startup-ms N]
  [--ttft-ms N] [--tokens-per-second N] [--max-concurrency N] [--error-rate F] [--seed N]
  [--ignore-sigterm] [--crash-after N] [--output-tokens N] [--max-model-len N] [--embedding-dim N]`;

type Kind = 'int' | 'num' | 'str' | 'bool';
interface FlagSpec {
  key: keyof SimConfig;
  kind: Kind;
  min?: number;
  max?: number;
}

const FLAGS: Record<string, FlagSpec> = {
  port: { key: 'port', kind: 'int', min: 0, max: 65535 },
  host: { key: 'host', kind: 'str' },
  model: { key: 'model', kind: 'str' },
  'startup-ms': { key: 'startupMs', kind: 'int', min: 0 },
  'ttft-ms': { key: 'ttftMs', kind: 'num', min: 0 },
  'tokens-per-second': { key: 'tokensPerSecond', kind: 'num', min: 0 },
  'max-concurrency': { key: 'maxConcurrency', kind: 'int', min: 0 },
  'error-rate': { key: 'errorRate', kind: 'num', min: 0, max: 1 },
  seed: { key: 'seed', kind: 'int' },
  'ignore-sigterm': { key: 'ignoreSigterm', kind: 'bool' },
  'crash-after': { key: 'crashAfter', kind: 'int', min: 0 },
  'output-tokens': { key: 'outputTokens', kind: 'int', min: 0 },
  'max-model-len': { key: 'maxModelLen', kind: 'int', min: 1 },
  'embedding-dim': { key: 'embeddingDim', kind: 'int', min: 1 },
};

export const DEFAULTS: Omit<SimConfig, 'port' | 'model'> = {
  host: '127.0.0.1',
  startupMs: 0,
  ttftMs: 0,
  tokensPerSecond: 0,
  maxConcurrency: 0,
  errorRate: 0,
  seed: 1,
  ignoreSigterm: false,
  crashAfter: 0,
  outputTokens: 16,
  maxModelLen: 4096,
  embeddingDim: 8,
};

function parseValue(flag: string, spec: FlagSpec, raw: string): string | number | boolean {
  if (spec.kind === 'str') {
    if (raw === '') throw new UsageError(`--${flag} must not be empty`);
    return raw;
  }
  if (spec.kind === 'bool') {
    if (raw === 'true') return true;
    if (raw === 'false') return false;
    throw new UsageError(`--${flag} takes no value (got "${raw}")`);
  }
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || (spec.kind === 'int' && !Number.isInteger(n))) {
    throw new UsageError(`--${flag} expects ${spec.kind === 'int' ? 'an integer' : 'a number'}, got "${raw}"`);
  }
  if (spec.min !== undefined && n < spec.min) throw new UsageError(`--${flag} must be >= ${spec.min}, got ${raw}`);
  if (spec.max !== undefined && n > spec.max) throw new UsageError(`--${flag} must be <= ${spec.max}, got ${raw}`);
  return n;
}

/** Parses argv (without node and script). Supports `--flag value` and `--flag=value`; the last occurrence wins. */
export function parseArgs(argv: readonly string[]): SimConfig {
  const out: Record<string, unknown> = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const spec = FLAGS[flag];
    if (!spec) throw new UsageError(`unknown flag "--${flag}"`);
    let raw: string;
    if (eq !== -1) raw = arg.slice(eq + 1);
    else if (spec.kind === 'bool') raw = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && spec.kind === 'str'))
        throw new UsageError(`--${flag} needs a value`);
      raw = next;
      i++;
    }
    out[spec.key] = parseValue(flag, spec, raw);
  }
  if (out.port === undefined) throw new UsageError('--port is required');
  if (out.model === undefined) throw new UsageError('--model is required');
  return out as unknown as SimConfig;
}
