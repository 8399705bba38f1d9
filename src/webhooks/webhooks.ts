import { Webhook } from 'standardwebhooks';
import type { Logger } from '../log/logger.js';
import type { BatchesRepo } from '../store/batches-repo.js';
import type { DeliveryRow, WebhookDeliveriesRepo } from '../store/webhook-deliveries-repo.js';
import { batchEvent, newWebhookId, webhookUrlsFor } from './events.js';
import { sendWebhook, type SendInput, type SendResult } from './send.js';
import type { AllowList, Resolver } from './ssrf.js';

export interface WebhooksOptions {
  /** WEBHOOK_URL: receives every batch's events. */
  serverUrl?: string;
  secret: string;
  allow: AllowList;
  /** First retry delay; later ones are multiples of it (see RETRY_FACTORS). @defaultValue 5_000 */
  retryBaseMs: number;
  /** @defaultValue 18 (about 24 h with the default base) */
  maxAttempts: number;
  /** Attempts stop once an event is this old, whatever the count. @defaultValue 24 h */
  giveUpAfterMs?: number;
  /** @defaultValue 10_000 */
  timeoutMs: number;
}

export interface WebhooksDeps {
  batches: Pick<BatchesRepo, 'get'>;
  deliveries: WebhookDeliveriesRepo;
  log: Logger;
  options: WebhooksOptions;
  /** Injected in tests; DNS by default. */
  resolve?: Resolver;
  /** Injected in tests. */
  send?: (input: SendInput) => Promise<SendResult>;
}

/**
 * Retry n waits RETRY_FACTORS[n-1] × base (the last factor repeats): with a 5 s base that is
 * 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then every 2 h, ±20 % jitter so that a receiver
 * that comes back is not hit by every pending event at the same instant.
 */
export const RETRY_FACTORS = [1, 6, 24, 120, 360, 720, 1440] as const;
const DAY_MS = 24 * 3600 * 1000;
const CONCURRENCY = 8;

export function retryDelayMs(attempt: number, baseMs: number, random: () => number = Math.random): number {
  const factor = RETRY_FACTORS[Math.min(attempt - 1, RETRY_FACTORS.length - 1)]!;
  return Math.round(baseMs * factor * (0.8 + 0.4 * random()));
}

/**
 * Batch webhooks: `recordEnded` (called in the transaction that ends a batch) stores one
 * delivery row per destination; a loop posts due rows, signed the Standard Webhooks way, and
 * retries with backoff. All state is the SQLite row, so a restart resumes where it was.
 * Invariant: a row is sent by at most one attempt at a time (`inFlight`), and a delivered or
 * failed row is never sent again.
 */
export function createWebhooks(deps: WebhooksDeps) {
  const { log, options: o } = deps;
  const signer = new Webhook(o.secret);
  const send = deps.send ?? sendWebhook;
  const inFlight = new Map<string, Promise<void>>();
  const pollMs = Math.min(1000, Math.max(50, Math.floor(o.retryBaseMs / 2)));
  let timer: NodeJS.Timeout | undefined;
  let stopped = true;
  let scanning = false;

  const attempt = async (row: DeliveryRow) => {
    const n = row.attempts + 1;
    const eventId = (JSON.parse(row.payload) as { id: string }).id;
    const fields = {
      webhookId: row.id,
      eventId,
      batchId: row.batchId,
      eventType: row.eventType,
      attempt: n,
      host: hostOf(row.url),
    };
    const t0 = performance.now();
    const headers = {
      'webhook-id': row.id,
      'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
      'webhook-signature': '',
    };
    headers['webhook-signature'] = signer.sign(
      row.id,
      new Date(Number(headers['webhook-timestamp']) * 1000),
      row.payload,
    );
    const r = await send({
      url: row.url,
      body: row.payload,
      headers,
      allow: o.allow,
      resolve: deps.resolve,
      timeoutMs: o.timeoutMs,
    });
    const ms = Math.round(performance.now() - t0);
    const now = Date.now();
    if (r.ok) {
      deps.deliveries.markDelivered(row.id, n, now);
      log.info({ ...fields, status: r.status, ms }, 'webhook delivered');
      return;
    }
    const delay = retryDelayMs(n, o.retryBaseMs);
    const tooOld = now + delay - row.createdAt > (o.giveUpAfterMs ?? DAY_MS);
    if (!r.retryable || n >= o.maxAttempts || tooOld) {
      deps.deliveries.markFailed(row.id, n, r.error);
      log.warn({ ...fields, status: r.status, ms, error: r.error }, 'webhook delivery failed; giving up');
      return;
    }
    deps.deliveries.markRetry(row.id, n, now + delay, r.error);
    log.info(
      { ...fields, status: r.status, ms, error: r.error, retryInMs: delay },
      'webhook delivery failed; will retry',
    );
  };

  const scan = () => {
    if (stopped || scanning) return;
    scanning = true;
    try {
      const free = CONCURRENCY - inFlight.size;
      if (free <= 0) return;
      for (const row of deps.deliveries.due(Date.now(), free + inFlight.size)) {
        if (inFlight.has(row.id) || inFlight.size >= CONCURRENCY) continue;
        const p = attempt(row)
          .catch((err) => log.error({ err, webhookId: row.id, batchId: row.batchId }, 'webhook attempt crashed'))
          .finally(() => {
            inFlight.delete(row.id);
            scan();
          });
        inFlight.set(row.id, p);
      }
    } catch (err) {
      log.error({ err }, 'webhook scan failed');
    } finally {
      scanning = false;
    }
  };

  const record = (batchId: string) => {
    const batch = deps.batches.get(batchId);
    if (!batch) return;
    const nowMs = Date.now();
    const event = batchEvent(batch, Math.floor(nowMs / 1000));
    if (!event) return;
    let added = 0;
    for (const url of webhookUrlsFor(batch, o.serverUrl)) {
      if (deps.deliveries.has(batchId, event.type, url)) continue;
      deps.deliveries.insert({
        id: newWebhookId(),
        batchId,
        eventType: event.type,
        url,
        payload: JSON.stringify(event),
        createdAt: nowMs,
        state: 'pending',
        attempts: 0,
        nextAttemptAt: nowMs,
      });
      added += 1;
    }
    // After the caller's transaction commits (this runs synchronously inside it).
    if (added > 0) setImmediate(scan);
  };

  return {
    /**
     * Records the batch's end event for each destination. Call it inside the transaction
     * that moved the batch to its terminal status: the event commits with the status or not
     * at all. Recording twice (finalize resumed after a crash) adds nothing.
     */
    recordEnded(batchId: string): void {
      // A webhook problem must never keep a batch from ending (the caller's transaction
      // would roll back and the batch be retried forever): log it and carry on.
      try {
        record(batchId);
      } catch (err) {
        log.error({ err, batchId }, 'could not record the webhook event');
      }
    },
    start(): void {
      stopped = false;
      timer = setInterval(scan, pollMs);
      timer.unref();
      scan();
    },
    /** Stops the loop and waits for attempts in flight (each bounded by the send timeout). */
    async stop(): Promise<void> {
      stopped = true;
      if (timer) clearInterval(timer);
      await Promise.allSettled([...inFlight.values()]);
    },
  };
}

export type Webhooks = ReturnType<typeof createWebhooks>;

/** Only the host goes to the log: a webhook URL's path or query may carry a token. */
function hostOf(url: string): string | null {
  try {
    return new URL(url).host;
  } catch {
    return null;
  }
}
