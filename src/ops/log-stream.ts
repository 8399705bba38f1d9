import type { Redis } from 'ioredis';
import { keys } from '../queue/jobs.js';
import { toS } from './views.js';

export interface LogLine {
  /** Unix seconds (ms precision) at which the worker read the line. */
  t: number;
  line: string;
}

const BLOCK_MS = 5_000;

const toLine = ([, fields]: [string, string[]]): LogLine => {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
  return { t: toS(Number(f.get('t') ?? 0)), line: f.get('l') ?? '' };
};

/**
 * Sends the last `tail` lines of one engine's output stream, then follows it until `signal`
 * aborts. The blocking XREAD runs on a connection of its own (a blocked connection can serve
 * nothing else), created here and closed when the stream ends, whatever ends it: no blocking
 * connection outlives its client.
 */
export async function followEngineLog(
  redis: Redis,
  prefix: string,
  opts: { workerId: string; model: string; tail: number; signal: AbortSignal; onLines: (lines: LogLine[]) => void },
): Promise<void> {
  const key = keys(prefix).engineLog(opts.workerId, opts.model);
  const recent =
    opts.tail > 0 ? ((await redis.xrevrange(key, '+', '-', 'COUNT', opts.tail)) as [string, string[]][]) : [];
  let lastId =
    recent[0]?.[0] ?? ((await redis.xrevrange(key, '+', '-', 'COUNT', 1)) as [string, string[]][])[0]?.[0] ?? '0-0';
  if (recent.length) opts.onLines(recent.reverse().map(toLine));
  if (opts.signal.aborted) return;
  const conn = redis.duplicate({ connectionName: `${prefix}-ops-log`, maxRetriesPerRequest: null });
  conn.on('error', () => undefined);
  const onAbort = () => conn.disconnect();
  opts.signal.addEventListener('abort', onAbort, { once: true });
  try {
    while (!opts.signal.aborted) {
      let res: [string, [string, string[]][]][] | null;
      try {
        res = await conn.xread('COUNT', 500, 'BLOCK', BLOCK_MS, 'STREAMS', key, lastId);
      } catch (err) {
        if (opts.signal.aborted) break;
        throw err;
      }
      const entries = res?.[0]?.[1] ?? [];
      if (entries.length === 0) continue;
      lastId = entries[entries.length - 1]![0];
      opts.onLines(entries.map(toLine));
    }
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    conn.disconnect();
  }
}
