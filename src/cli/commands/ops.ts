import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { opsFetch } from '../client.js';
import { CliError, EXIT } from '../errors.js';
import { parseSse } from '../sse.js';
import type { Ctx } from './batches.js';

/** `batchwright models`: every model in models.yaml with its state. */
export async function models(ctx: Ctx): Promise<number> {
  const page = await ctx.client.models.list();
  const rows = page.data as ((typeof page.data)[number] & {
    state?: string;
    engine?: string;
    max_model_len?: number | null;
    detail?: string | null;
  })[];
  const w = Math.max(5, ...rows.map((m) => m.id.length));
  ctx.out(`${'MODEL'.padEnd(w)}  ${'STATE'.padEnd(9)}  ${'ENGINE'.padEnd(8)}  MAX_MODEL_LEN`);
  for (const m of rows) {
    ctx.out(
      `${m.id.padEnd(w)}  ${(m.state ?? '-').padEnd(9)}  ${(m.engine ?? '-').padEnd(8)}  ${m.max_model_len ?? '-'}`,
    );
    // An engine run as a SLURM/PBS job: its job state, queue position, start estimate (docs/hpc.md).
    if (m.detail) ctx.out(`${' '.repeat(w)}  ${m.detail}`);
  }
  return EXIT.ok;
}

/** How long `logs` without -f waits for more backlog lines before it stops. */
const BACKLOG_QUIET_MS = 1000;

/**
 * `batchwright logs <worker> <model> [-f]`: the engine's log through the operator API's SSE
 * stream (`line` events, data `{t, line}`). Without -f it prints the backlog (the last --tail
 * lines) and stops once the stream goes quiet.
 */
export async function logs(
  ctx: Ctx,
  workerId: string,
  model: string,
  flags: { follow: boolean; tail: number },
): Promise<number> {
  const ac = new AbortController();
  const path = `/ops/engines/${encodeURIComponent(workerId)}/${encodeURIComponent(model)}/log?tail=${flags.tail}`;
  const res = await opsFetch(ctx.env, path, { signal: ac.signal, accept: 'text/event-stream' });
  let quiet: NodeJS.Timeout | undefined;
  const armQuiet = () => {
    if (flags.follow) return;
    clearTimeout(quiet);
    quiet = setTimeout(() => ac.abort(), BACKLOG_QUIET_MS);
  };
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  armQuiet();
  try {
    for await (const ev of parseSse(res.body as unknown as AsyncIterable<Uint8Array>)) {
      if (ev.event === 'line') {
        try {
          const { t, line } = JSON.parse(ev.data) as { t?: number | string; line?: string };
          // t: Unix seconds with millisecond precision.
          const at = typeof t === 'number' ? new Date(t * 1000).toISOString() : (t ?? '');
          ctx.out(at ? `${at} ${line ?? ''}` : (line ?? ''));
        } catch {
          ctx.out(ev.data);
        }
      } else if (ev.event === 'error' || ev.event === 'stream_error') {
        let why = ev.data;
        try {
          why = (JSON.parse(ev.data) as { message?: string }).message ?? ev.data;
        } catch {
          // plain text
        }
        throw new CliError(`the server ended the log stream: ${why}`, EXIT.apiError);
      }
      armQuiet();
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  } finally {
    clearTimeout(quiet);
    process.off('SIGINT', onSigint);
  }
  return EXIT.ok;
}

/**
 * `batchwright export-starred [--batch <id>...]`: the answers starred in the dashboard, as a
 * JSONL fine-tuning dataset (every batch's stars without --batch).
 */
export async function exportStarred(ctx: Ctx, batchIds: string[], outFile: string | undefined): Promise<number> {
  const query = batchIds.length ? `?batch_ids=${batchIds.map(encodeURIComponent).join(',')}` : '';
  const res = await opsFetch(ctx.env, `/ops/stars/export${query}`, { accept: 'application/jsonl, */*' });
  const skipped = Number(res.headers.get('x-batchwright-skipped') ?? 0);
  if (skipped > 0) ctx.err(`${skipped} starred result(s) left out: not a successful answer, or its input is gone.`);
  const body = Readable.fromWeb(res.body as unknown as WebReadableStream);
  if (!outFile) {
    await pipeline(body, process.stdout, { end: false });
    return EXIT.ok;
  }
  const tmp = `${outFile}.part`;
  try {
    await pipeline(body, createWriteStream(tmp));
    await rename(tmp, outFile);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  ctx.err(`wrote ${outFile}`);
  return EXIT.ok;
}
