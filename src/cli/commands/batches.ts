import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';
import type { CliEnv } from '../client.js';
import { downloadResults } from '../download.js';
import { CliError, EXIT } from '../errors.js';
import { formatDuration } from '../progress.js';
import { isTerminal, watchBatch } from '../watch.js';

const ENDPOINTS = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings'] as const;
type Endpoint = (typeof ENDPOINTS)[number];

export interface Ctx {
  env: CliEnv;
  client: OpenAI;
  /** Progress bar and keys, or plain lines. */
  tty: boolean;
  out: (line: string) => void;
  err: (line: string) => void;
}

export interface WatchFlags {
  out: string;
  interval: number;
}

/** Reads the first request of the input (64 KiB at most) for its model and url: hints only. */
async function firstRequest(file: string): Promise<{ model?: string; url?: string }> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(65536);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const first = buf
      .subarray(0, bytesRead)
      .toString('utf8')
      .split('\n')
      .find((l) => l.trim());
    const obj = JSON.parse(first ?? '') as { url?: unknown; body?: { model?: unknown } };
    return {
      ...(typeof obj.body?.model === 'string' && { model: obj.body.model }),
      ...(typeof obj.url === 'string' && { url: obj.url }),
    };
  } catch {
    return {};
  } finally {
    await fh.close();
  }
}

export function parseMetadata(pairs: string[]): Record<string, string> | undefined {
  if (!pairs.length) return undefined;
  const md: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CliError(`--metadata takes key=value, got "${p}".`, EXIT.usage);
    md[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return md;
}

function printValidationErrors(ctx: Ctx, b: Batch): void {
  const data = b.errors?.data ?? [];
  ctx.err(
    `batch ${b.id} failed: the input file has ${data.length === 1 ? '1 problem' : `${data.length} problems`}; no request ran. Fix the file and submit again.`,
  );
  for (const e of data) {
    const where = e.line != null ? `line ${e.line}` : 'file';
    ctx.err(`  ${where}: ${e.code ?? 'error'}${e.param ? ` (${e.param})` : ''}: ${e.message ?? ''}`);
  }
}

/** Summary, downloads and the exit code of a batch that ended. */
export async function finish(ctx: Ctx, b: Batch, outDir: string): Promise<number> {
  const rc = b.request_counts ?? { total: 0, completed: 0, failed: 0 };
  const took = b.created_at && (b.completed_at ?? b.failed_at ?? b.cancelled_at ?? b.expired_at);
  const tookText = took ? ` in ${formatDuration(took - b.created_at)}` : '';
  if (b.status === 'failed') {
    printValidationErrors(ctx, b);
    return EXIT.batchNotCompleted;
  }
  ctx.out(`batch ${b.id} ${b.status}${tookText}: ${rc.total} requests, ${rc.completed} completed, ${rc.failed} failed`);
  for (const f of await downloadResults(ctx.client, b, outDir))
    ctx.out(`wrote ${f.path} (${f.lines} ${f.kind === 'output' ? 'results' : 'error lines'})`);
  if (b.status === 'completed') {
    if (rc.failed > 0) {
      ctx.err(
        `${rc.failed} of ${rc.total} requests failed: see the error file for each one's reason (docs/errors.md).`,
      );
      return EXIT.requestsFailed;
    }
    return EXIT.ok;
  }
  ctx.err(
    b.status === 'expired'
      ? `batch ${b.id} expired before every request ran; the rest have batch_expired lines.`
      : `batch ${b.id} was cancelled; requests that never ran have batch_cancelled lines.`,
  );
  return EXIT.batchNotCompleted;
}

export async function submit(
  ctx: Ctx,
  file: string,
  flags: WatchFlags & { endpoint?: string; metadata: string[]; watch: boolean },
): Promise<number> {
  const info = await stat(file).catch(() => null);
  if (!info?.isFile())
    throw new CliError(`cannot read ${file}: no such file. Pass the JSONL file of requests, one per line.`, EXIT.usage);
  const hint = await firstRequest(file);
  const endpoint = (flags.endpoint ??
    (ENDPOINTS.includes(hint.url as Endpoint) ? hint.url : '/v1/chat/completions')) as Endpoint;
  if (!ENDPOINTS.includes(endpoint))
    throw new CliError(`--endpoint must be one of ${ENDPOINTS.join(', ')}, got "${endpoint}".`, EXIT.usage);
  const metadata = parseMetadata(flags.metadata);
  const uploaded = await ctx.client.files.create({ file: createReadStream(file), purpose: 'batch' });
  const batch = await ctx.client.batches.create({
    input_file_id: uploaded.id,
    endpoint,
    completion_window: '24h',
    ...(metadata && { metadata }),
  });
  ctx.err(
    `uploaded ${file} as ${uploaded.id} (${uploaded.bytes} bytes); created ${batch.id} (${endpoint}${hint.model ? `, model ${hint.model}` : ''})`,
  );
  if (!flags.watch) {
    ctx.out(batch.id);
    return EXIT.ok;
  }
  const done = await watchBatch(ctx.env, ctx.client, batch.id, {
    intervalMs: flags.interval,
    tty: ctx.tty,
    ...(hint.model && { modelHint: hint.model }),
  });
  return finish(ctx, done, flags.out);
}

export async function watch(ctx: Ctx, id: string, flags: WatchFlags & { download: boolean }): Promise<number> {
  const done = await watchBatch(ctx.env, ctx.client, id, { intervalMs: flags.interval, tty: ctx.tty });
  if (!flags.download)
    return done.status === 'completed'
      ? done.request_counts?.failed
        ? EXIT.requestsFailed
        : EXIT.ok
      : finishNoDownload(ctx, done);
  return finish(ctx, done, flags.out);
}

function finishNoDownload(ctx: Ctx, b: Batch): number {
  if (b.status === 'failed') printValidationErrors(ctx, b);
  else ctx.err(`batch ${b.id} ${b.status}`);
  return EXIT.batchNotCompleted;
}

export async function download(ctx: Ctx, id: string, outDir: string): Promise<number> {
  const b = await ctx.client.batches.retrieve(id);
  if (!isTerminal(b.status))
    throw new CliError(
      `batch ${id} is ${b.status}: its files exist once it ends. Wait with: batchwright watch ${id}`,
      EXIT.batchNotCompleted,
    );
  return finish(ctx, b, outDir);
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

export async function list(ctx: Ctx, limit: number): Promise<number> {
  const page = await ctx.client.batches.list({ limit });
  const rows = page.data;
  if (!rows.length) {
    ctx.out('no batches');
    return EXIT.ok;
  }
  ctx.out(
    `${pad('ID', 34)} ${pad('STATUS', 11)} ${pad('MODEL', 24)} ${pad('DONE/TOTAL', 12)} ${pad('FAILED', 7)} CREATED`,
  );
  for (const b of rows) {
    const rc = b.request_counts ?? { total: 0, completed: 0, failed: 0 };
    const created = new Date(b.created_at * 1000).toISOString().replace('T', ' ').slice(0, 19);
    ctx.out(
      `${pad(b.id, 34)} ${pad(b.status, 11)} ${pad(b.model ?? '-', 24)} ${pad(`${rc.completed + rc.failed}/${rc.total}`, 12)} ${pad(String(rc.failed), 7)} ${created}`,
    );
  }
  if (page.has_more) ctx.err(`(more batches exist: raise --limit, max 100)`);
  return EXIT.ok;
}

export async function cancel(ctx: Ctx, id: string): Promise<number> {
  const b = await ctx.client.batches.cancel(id);
  ctx.out(`${b.id} ${b.status}`);
  return EXIT.ok;
}
