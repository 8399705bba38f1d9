import { randomBytes } from 'node:crypto';
import type { BatchRow } from '../store/batches-repo.js';

/** OpenAI's batch webhook events (`WebhookBatchCompleted` etc. in openapi.yaml). */
export const BATCH_EVENT_TYPES = {
  completed: 'batch.completed',
  failed: 'batch.failed',
  expired: 'batch.expired',
  cancelled: 'batch.cancelled',
} as const;

export type BatchEventType = (typeof BATCH_EVENT_TYPES)[keyof typeof BATCH_EVENT_TYPES];

export interface BatchEvent {
  id: string;
  object: 'event';
  /** When the batch reached the status (OpenAI: "when the batch API request was completed"). */
  created_at: number;
  type: BatchEventType;
  data: { id: string };
}

/** The metadata key a client sets to get this batch's events. */
export const WEBHOOK_METADATA_KEY = 'webhook_url';

const token = (n: number) => randomBytes(n).toString('base64url').replace(/[-_]/g, '').slice(0, n);
export const newEventId = () => `evt_${token(24)}`;
/** The Standard Webhooks `webhook-id`: one per delivery (event × URL), the same on every retry. */
export const newWebhookId = () => `msg_${token(24)}`;

export function eventTypeFor(status: string): BatchEventType | null {
  return (BATCH_EVENT_TYPES as Record<string, BatchEventType>)[status] ?? null;
}

/** The event for a batch in a terminal status, or null if it is not in one. */
export function batchEvent(batch: BatchRow, nowS: number): BatchEvent | null {
  const type = eventTypeFor(batch.status);
  if (!type) return null;
  const at = {
    completed: batch.completedAt,
    failed: batch.failedAt,
    expired: batch.expiredAt,
    cancelled: batch.cancelledAt,
  }[batch.status as keyof typeof BATCH_EVENT_TYPES];
  return { id: newEventId(), object: 'event', created_at: at ?? nowS, type, data: { id: batch.id } };
}

/**
 * Where a batch's events go: the server's WEBHOOK_URL (every batch) and the batch's own
 * `metadata.webhook_url`, each once.
 */
export function webhookUrlsFor(batch: Pick<BatchRow, 'metadata'>, serverUrl: string | undefined): string[] {
  const urls: string[] = [];
  if (serverUrl) urls.push(serverUrl);
  const own = metadataWebhookUrl(batch.metadata);
  if (own && !urls.includes(own)) urls.push(own);
  return urls;
}

export function metadataWebhookUrl(metadata: string | null): string | null {
  if (!metadata) return null;
  try {
    const m = JSON.parse(metadata) as Record<string, unknown>;
    const v = m[WEBHOOK_METADATA_KEY];
    return typeof v === 'string' && v !== '' ? v : null;
  } catch {
    return null;
  }
}
