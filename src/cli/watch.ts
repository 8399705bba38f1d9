import OpenAI from 'openai';
import cliProgress from 'cli-progress';
import type { Batch } from 'openai/resources/batches';
import type { CliEnv } from './client.js';
import { CliError, EXIT } from './errors.js';
import { formatDuration, formatRate, RateMeter } from './progress.js';
import { WaitingExplainer } from './waiting.js';
import { KeyPrompt } from './key-input.js';

export const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'] as const;
export const isTerminal = (s: string) => (TERMINAL as readonly string[]).includes(s);

export interface WatchOptions {
  /** Poll period. @defaultValue 1000 */
  intervalMs: number;
  /** A progress bar and key presses (stderr and stdin are terminals); otherwise plain lines. */
  tty: boolean;
  /** The model of the batch when known before validation ends (read from the input file). */
  modelHint?: string;
  /** How long a batch may sit without progress before the CLI asks why. @defaultValue 3000 */
  stallMs?: number;
  /** Plain mode: at most one line per this many ms while things change. @defaultValue 5000 */
  lineEveryMs?: number;
}

/** How long the watch keeps retrying a server that stopped answering before giving up. */
const UNREACHABLE_GIVE_UP_MS = 60_000;
/** Plain mode prints a line at least this often, so a log shows the watch is alive. */
const HEARTBEAT_MS = 30_000;

function counts(b: Batch) {
  const rc = b.request_counts ?? { total: 0, completed: 0, failed: 0 };
  return { total: rc.total, completed: rc.completed, failed: rc.failed, done: rc.completed + rc.failed };
}

/** One plain-text status line: `batch_… in_progress 40/100 (2 failed) 12.5 req/s ETA 5s`. */
export function statusLine(
  b: Batch,
  rate: { perSecond: number | null; etaSeconds: number | null },
  reason: string | null,
): string {
  const c = counts(b);
  const parts = [`${b.id} ${b.status}`];
  if (c.total > 0)
    parts.push(
      `${c.done}/${c.total}${c.failed ? ` (${c.failed} failed)` : ''}`,
      formatRate(rate.perSecond),
      `ETA ${formatDuration(rate.etaSeconds)}`,
    );
  let line = parts.join(' ');
  if (reason) line += ` | waiting: ${reason}`;
  return line;
}

/**
 * Polls a batch until it ends and returns its final object. Shows progress on stderr: a bar
 * with throughput and ETA on a terminal, plain lines otherwise; and, while the batch does not
 * move, why (see WaitingExplainer). On a terminal, keys: c cancel (asks y/N), d details,
 * Ctrl-C stop watching (exit 130, the batch keeps running), anything else keeps waiting.
 */
export async function watchBatch(env: CliEnv, client: OpenAI, id: string, opts: WatchOptions): Promise<Batch> {
  const stallMs = opts.stallMs ?? 3000;
  const lineEveryMs = opts.lineEveryMs ?? 5000;
  const explainer = new WaitingExplainer(env, client, opts.modelHint);
  const meter = new RateMeter();
  const started = Date.now();
  let batch = await client.batches.retrieve(id);
  let reason: string | null = null;
  let reasonAt = 0;
  let lastLine = '';
  let lastLineAt = 0;
  let unreachableSince: number | null = null;

  const multibar = opts.tty
    ? new cliProgress.MultiBar(
        {
          stream: process.stderr,
          format: '{bar} {percentage}% | {value}/{total} | {tput} | ETA {left} | {status}',
          barsize: 28,
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
          etaBuffer: 1,
          forceRedraw: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const bar = multibar?.create(1, 0, { tput: '-- req/s', left: '--', status: batch.status });
  const say = (text: string) => (multibar ? multibar.log(`${text}\n`) : process.stderr.write(`${text}\n`));

  let interrupted = false;
  let wake: (() => void) | null = null;
  const sleep = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
  const prompt =
    opts.tty && process.stdin.isTTY
      ? new KeyPrompt({
          say,
          details: () => `${JSON.stringify(batch, null, 2)}\nwaiting reason: ${reason ?? 'none (the batch is moving)'}`,
          cancel: async () => {
            batch = await client.batches.cancel(id);
            say(`cancel requested: ${batch.id} is ${batch.status}; results so far are kept`);
          },
          batchId: id,
          interrupt: () => {
            interrupted = true;
            wake?.();
          },
        })
      : null;
  const onSigint = () => {
    interrupted = true;
    wake?.();
  };
  process.on('SIGINT', onSigint);
  if (prompt) say('keys: c cancel the batch · d details · Ctrl-C stop watching (the batch keeps running)');

  try {
    for (;;) {
      if (interrupted)
        throw new CliError(
          `stopped watching; ${id} keeps running on the server. Watch it again with: batchwright watch ${id}`,
          EXIT.interrupted,
        );
      const now = Date.now();
      const c = counts(batch);
      meter.add({ at: now, done: c.done });
      if (isTerminal(batch.status)) break;
      const rate = meter.rate(c.total);
      const waiting =
        (batch.status === 'validating' && now - started >= stallMs) ||
        (batch.status === 'in_progress' && meter.stalledForMs(now) >= stallMs);
      if (!waiting) reason = null;
      else if (now - reasonAt >= 2000) {
        reason = await explainer.explain(batch);
        reasonAt = now;
      }
      if (bar) {
        bar.setTotal(Math.max(1, c.total));
        bar.update(c.done, {
          tput: formatRate(rate.perSecond),
          left: formatDuration(rate.etaSeconds),
          status: reason ? `waiting: ${reason}` : batch.status,
        });
      } else {
        const line = statusLine(batch, rate, reason);
        const changed = line.replace(/ [\d.-]+ req\/s ETA \S+/, '') !== lastLine.replace(/ [\d.-]+ req\/s ETA \S+/, '');
        if ((changed && now - lastLineAt >= lineEveryMs) || now - lastLineAt >= HEARTBEAT_MS || lastLineAt === 0) {
          process.stderr.write(`${line}\n`);
          lastLine = line;
          lastLineAt = now;
        }
      }
      await sleep(opts.intervalMs);
      if (interrupted) continue;
      try {
        batch = await client.batches.retrieve(id);
        unreachableSince = null;
      } catch (e) {
        // Over the key's rate limit (other clients share it): slow down, keep watching.
        if (e instanceof OpenAI.RateLimitError) {
          const wait = Number(e.headers?.get('retry-after') ?? 5);
          say(`rate limited by the server (429); polling again in ${wait} s`);
          await sleep(Math.min(60, Math.max(1, wait)) * 1000);
          continue;
        }
        if (!(e instanceof OpenAI.APIConnectionError)) throw e;
        unreachableSince ??= Date.now();
        if (Date.now() - unreachableSince > UNREACHABLE_GIVE_UP_MS) throw e;
        say(`server not answering (${env.baseUrl}); retrying — the batch keeps running on the server`);
      }
    }
    if (bar) {
      const c = counts(batch);
      bar.setTotal(Math.max(1, c.total));
      bar.update(c.done, { status: batch.status, left: '0s' });
    } else {
      const rate =
        batch.status === 'completed' ? meter.rate(counts(batch).total) : { perSecond: null, etaSeconds: null };
      process.stderr.write(`${statusLine(batch, rate, null)}\n`);
    }
    return batch;
  } finally {
    process.off('SIGINT', onSigint);
    prompt?.close();
    multibar?.stop();
  }
}
