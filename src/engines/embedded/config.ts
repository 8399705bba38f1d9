/** CLI flags of the embedded (node-llama-cpp) engine. Pure parsing: no I/O, throws UsageError on bad input. */

export interface EmbeddedConfig {
  port: number;
  host: string;
  /** Served model id (what clients send as `model`). */
  model: string;
  /** GGUF file to load. */
  gguf: string;
  /** CPU threads for llama.cpp. 1 on small machines: more threads than free cores collapses throughput. */
  threads: number;
  /** Context length per sequence (prompt + output tokens); null: the model's training context, at most 4096. */
  ctx: number | null;
  /** Sequences generated at once; further requests wait in FIFO order. */
  parallel: number;
}

export class UsageError extends Error {}

export const USAGE = `usage: node --import tsx src/engines/embedded/main.ts --port N --model ID --gguf FILE.gguf
  [--host 127.0.0.1] [--threads 1] [--ctx N] [--parallel 4]`;

type Kind = 'int' | 'str';
const FLAGS: Record<string, { key: keyof EmbeddedConfig; kind: Kind; min?: number; max?: number }> = {
  port: { key: 'port', kind: 'int', min: 0, max: 65535 },
  host: { key: 'host', kind: 'str' },
  model: { key: 'model', kind: 'str' },
  gguf: { key: 'gguf', kind: 'str' },
  threads: { key: 'threads', kind: 'int', min: 1, max: 1024 },
  ctx: { key: 'ctx', kind: 'int', min: 16 },
  parallel: { key: 'parallel', kind: 'int', min: 1, max: 1024 },
};

export const DEFAULTS = { host: '127.0.0.1', threads: 1, ctx: null, parallel: 4 } as const;

/** Parses argv (without node and script). `--flag value` and `--flag=value`; the last occurrence wins. */
export function parseArgs(argv: readonly string[]): EmbeddedConfig {
  const out: Record<string, unknown> = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const spec = FLAGS[flag];
    if (!spec) throw new UsageError(`unknown flag "--${flag}"`);
    let raw: string | undefined = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (raw === undefined || (eq === -1 && raw.startsWith('--'))) throw new UsageError(`--${flag} needs a value`);
    if (spec.kind === 'str') {
      if (raw === '') throw new UsageError(`--${flag} must not be empty`);
      out[spec.key] = raw;
      continue;
    }
    raw = raw.trim();
    const n = raw === '' ? NaN : Number(raw);
    if (!Number.isInteger(n)) throw new UsageError(`--${flag} expects an integer, got "${raw}"`);
    if (spec.min !== undefined && n < spec.min) throw new UsageError(`--${flag} must be >= ${spec.min}, got ${raw}`);
    if (spec.max !== undefined && n > spec.max) throw new UsageError(`--${flag} must be <= ${spec.max}, got ${raw}`);
    out[spec.key] = n;
  }
  for (const required of ['port', 'model', 'gguf'] as const) {
    if (out[required] === undefined) throw new UsageError(`--${required} is required`);
  }
  return out as unknown as EmbeddedConfig;
}
