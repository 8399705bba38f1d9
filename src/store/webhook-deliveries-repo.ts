import { and, asc, eq, lte } from 'drizzle-orm';
import type { Db } from './db.js';
import { webhookDeliveries } from './schema.js';

export type DeliveryRow = typeof webhookDeliveries.$inferSelect;
export type NewDeliveryRow = typeof webhookDeliveries.$inferInsert;

/**
 * Webhook events waiting to be posted, and what became of them. Times here are epoch
 * milliseconds (created_at, next_attempt_at, delivered_at): backoff steps can be shorter
 * than a second in tests.
 */
export function createWebhookDeliveriesRepo(db: Db) {
  return {
    insert(row: NewDeliveryRow): void {
      db.insert(webhookDeliveries).values(row).run();
    },
    /** Whether this event was already recorded for this URL (a batch ends once; finalize may run twice). */
    has(batchId: string, eventType: string, url: string): boolean {
      const r = db
        .select({ id: webhookDeliveries.id })
        .from(webhookDeliveries)
        .where(
          and(
            eq(webhookDeliveries.batchId, batchId),
            eq(webhookDeliveries.eventType, eventType),
            eq(webhookDeliveries.url, url),
          ),
        )
        .get();
      return r !== undefined;
    },
    get(id: string): DeliveryRow | undefined {
      return db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)).get();
    },
    listForBatch(batchId: string): DeliveryRow[] {
      return db
        .select()
        .from(webhookDeliveries)
        .where(eq(webhookDeliveries.batchId, batchId))
        .orderBy(asc(webhookDeliveries.createdAt))
        .all();
    },
    /** Pending rows whose next attempt is due, oldest due first. */
    due(nowMs: number, limit: number): DeliveryRow[] {
      return db
        .select()
        .from(webhookDeliveries)
        .where(and(eq(webhookDeliveries.state, 'pending'), lte(webhookDeliveries.nextAttemptAt, nowMs)))
        .orderBy(asc(webhookDeliveries.nextAttemptAt))
        .limit(limit)
        .all();
    },
    /** The earliest next attempt of any pending row (to sleep until it), or null. */
    nextDueAt(): number | null {
      const r = db
        .select({ at: webhookDeliveries.nextAttemptAt })
        .from(webhookDeliveries)
        .where(eq(webhookDeliveries.state, 'pending'))
        .orderBy(asc(webhookDeliveries.nextAttemptAt))
        .limit(1)
        .get();
      return r?.at ?? null;
    },
    markDelivered(id: string, attempts: number, nowMs: number): void {
      db.update(webhookDeliveries)
        .set({ state: 'delivered', attempts, deliveredAt: nowMs, lastError: null })
        .where(eq(webhookDeliveries.id, id))
        .run();
    },
    markRetry(id: string, attempts: number, nextAttemptAt: number, lastError: string): void {
      db.update(webhookDeliveries)
        .set({ attempts, nextAttemptAt, lastError })
        .where(eq(webhookDeliveries.id, id))
        .run();
    },
    markFailed(id: string, attempts: number, lastError: string): void {
      db.update(webhookDeliveries)
        .set({ state: 'failed', attempts, lastError })
        .where(eq(webhookDeliveries.id, id))
        .run();
    },
  };
}

export type WebhookDeliveriesRepo = ReturnType<typeof createWebhookDeliveriesRepo>;
