import { describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { assertMatchesSchema } from '../helpers/openapi.js';
import { batchEvent, eventTypeFor, webhookUrlsFor } from '../../src/webhooks/events.js';
import { RETRY_FACTORS, retryDelayMs } from '../../src/webhooks/webhooks.js';
import type { BatchRow } from '../../src/store/batches-repo.js';

const batch = (over: Partial<BatchRow>): BatchRow =>
  ({
    id: 'batch_abc123',
    status: 'completed',
    metadata: null,
    completedAt: 1_700_000_100,
    failedAt: null,
    expiredAt: null,
    cancelledAt: null,
    ...over,
  }) as BatchRow;

const SCHEMAS = {
  completed: 'WebhookBatchCompleted',
  failed: 'WebhookBatchFailed',
  expired: 'WebhookBatchExpired',
  cancelled: 'WebhookBatchCancelled',
} as const;

describe('batch webhook events', () => {
  it('each terminal status gives the event OpenAI specifies (contract test against openapi.yaml)', () => {
    for (const [status, schema] of Object.entries(SCHEMAS)) {
      const at = {
        completedAt: null,
        failedAt: null,
        expiredAt: null,
        cancelledAt: null,
        [`${status}At`]: 1_700_000_500,
      };
      const e = batchEvent(batch({ status, ...at }), 1)!;
      assertMatchesSchema(schema, e);
      expect(e).toMatchObject({
        object: 'event',
        type: `batch.${status}`,
        created_at: 1_700_000_500,
        data: { id: 'batch_abc123' },
      });
      expect(e.id).toMatch(/^evt_[A-Za-z0-9]{24}$/);
      // The schema is strict on `type`: an event of one kind does not pass as another.
      const other = Object.values(SCHEMAS).find((s) => s !== schema)!;
      expect(() => assertMatchesSchema(other, e)).toThrow(/type/);
    }
  }, 90_000); // parsing the 3 MB spec takes seconds on a busy machine

  it('no event for a batch that has not ended', () => {
    for (const status of ['validating', 'in_progress', 'finalizing', 'cancelling']) {
      expect(eventTypeFor(status)).toBeNull();
      expect(batchEvent(batch({ status }), 1)).toBeNull();
    }
  });

  it('destinations: the server URL, the batch URL, each once', () => {
    const meta = (u: string) => JSON.stringify({ webhook_url: u, other: 'x' });
    expect(webhookUrlsFor({ metadata: null }, undefined)).toEqual([]);
    expect(webhookUrlsFor({ metadata: meta('https://a.example/h') }, undefined)).toEqual(['https://a.example/h']);
    expect(webhookUrlsFor({ metadata: meta('https://a.example/h') }, 'https://ops.example/h')).toEqual([
      'https://ops.example/h',
      'https://a.example/h',
    ]);
    expect(webhookUrlsFor({ metadata: meta('https://ops.example/h') }, 'https://ops.example/h')).toEqual([
      'https://ops.example/h',
    ]);
    expect(webhookUrlsFor({ metadata: JSON.stringify({ other: 'x' }) }, undefined)).toEqual([]);
  });
});

describe('Standard Webhooks signature', () => {
  it('a signature over "id.timestamp.body" verifies with the secret and fails with another or a changed body', () => {
    const secret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    const body = JSON.stringify(batchEvent(batch({}), 1));
    const ts = new Date();
    const sig = new Webhook(secret).sign('msg_1', ts, body);
    expect(sig).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    const headers = {
      'webhook-id': 'msg_1',
      'webhook-timestamp': String(Math.floor(ts.getTime() / 1000)),
      'webhook-signature': sig,
    };
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(`whsec_${Buffer.alloc(32, 8).toString('base64')}`).verify(body, headers)).toThrow();
    expect(() => new Webhook(secret).verify(body.replace('batch_abc123', 'batch_other'), headers)).toThrow();
    expect(() => new Webhook(secret).verify(body, { ...headers, 'webhook-id': 'msg_2' })).toThrow();
  });
});

describe('retry backoff', () => {
  it('5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then 2 h, with ±20 % jitter', () => {
    const mid = [1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => retryDelayMs(n, 5000, () => 0.5));
    expect(mid).toEqual([5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 7_200_000, 7_200_000]);
    expect(retryDelayMs(1, 5000, () => 0)).toBe(4000);
    expect(retryDelayMs(1, 5000, () => 0.999999)).toBe(6000);
    // The default 18 attempts span about a day.
    const total = Array.from({ length: 17 }, (_, i) => retryDelayMs(i + 1, 5000, () => 0.5)).reduce((a, b) => a + b, 0);
    expect(total / 3_600_000).toBeGreaterThan(20);
    expect(total / 3_600_000).toBeLessThan(26);
    expect(RETRY_FACTORS[0]).toBe(1);
  });
});
