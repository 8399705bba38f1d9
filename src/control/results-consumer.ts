import type { Redis } from 'ioredis';
import type { Logger } from '../log/logger.js';
import { decodeMessage, keys, type WorkerMessage } from '../queue/jobs.js';
import type { BatchesRepo, StoredResult } from '../store/batches-repo.js';
import { errorOnlyLine, isSuccess, responseLine } from '../domain/result-line.js';

export interface ResultsConsumerDeps {
  redis: Redis;
  batches: BatchesRepo;
  log: Logger;
  prefix: string;
  /** Called with the batches that got results, after they are committed. */
  onApplied: (batchIds: Set<string>) => void;
}

const CONSUMER = 'control-plane-1';

/**
 * Reads worker messages from the results stream (a consumer group, so a message stays
 * pending until we ACK it), stores them in SQLite in one transaction per read, then ACKs.
 * A crash between commit and ACK replays the messages; storeResults ignores results for
 * requests that are already done, so each custom_id is recorded exactly once.
 */
export function startResultsConsumer(deps: ResultsConsumerDeps): { stop(): Promise<void> } {
  const k = keys(deps.prefix);
  let running = true;
  // A blocking XREADGROUP holds its connection for up to BLOCK ms: it gets one of its own, or
  // every other command of the control plane (dispatch, cancel flags) would wait behind it.
  const reader = deps.redis.duplicate();
  reader.on('error', () => undefined); // reconnects by itself; the loop logs failed commands
  const ensureGroup = async () => {
    try {
      await reader.xgroup('CREATE', k.results, k.resultsGroup, '0', 'MKSTREAM');
    } catch (e) {
      if (!String((e as Error).message).includes('BUSYGROUP')) throw e;
    }
  };

  const apply = (entries: [string, string[]][]): string[] => {
    const results: StoredResult[] = [];
    const done: { batchId: string; chunkNo: number; attempt: number | undefined }[] = [];
    const touched = new Set<string>();
    for (const [, fields] of entries) {
      let msg: WorkerMessage;
      try {
        msg = decodeMessage(fields);
      } catch {
        deps.log.warn('ignoring an unreadable results message');
        continue;
      }
      touched.add(msg.batchId);
      if (msg.t === 'c') done.push({ batchId: msg.batchId, chunkNo: msg.chunkNo, attempt: msg.attempt });
      else {
        const customId = msg.customId;
        const line =
          msg.status === 0
            ? errorOnlyLine(customId, 'engine_unavailable', safeMessage(msg.body))
            : responseLine(customId, msg.status, msg.requestId, msg.body);
        results.push({
          batchId: msg.batchId,
          idx: msg.idx,
          line,
          isError: !isSuccess(msg.status),
          usage: msg.usage,
          latencyMs: msg.latencyMs,
        });
      }
    }
    deps.batches.transaction(() => {
      deps.batches.storeResults(results);
      for (const d of done) deps.batches.finishChunk(d.batchId, d.chunkNo, d.attempt); // only the chunk's current attempt closes it
    });
    deps.onApplied(touched);
    return entries.map(([id]) => id);
  };

  const loop = async () => {
    await ensureGroup();
    let cursor = '0'; // first our own pending entries (unacknowledged before a crash), then new ones
    while (running) {
      try {
        const res = (await reader.xreadgroup(
          'GROUP',
          k.resultsGroup,
          CONSUMER,
          'COUNT',
          2000,
          'BLOCK',
          500,
          'STREAMS',
          k.results,
          cursor,
        )) as [string, [string, string[]][]][] | null;
        const entries = res?.[0]?.[1] ?? [];
        if (cursor === '0' && entries.length === 0) cursor = '>';
        if (entries.length === 0) continue;
        const ids = apply(entries);
        await reader
          .multi()
          .xack(k.results, k.resultsGroup, ...ids)
          .xdel(k.results, ...ids)
          .exec();
      } catch (e) {
        if (!running) break;
        const msg = (e as Error).message;
        if (msg.includes('NOGROUP')) {
          // Redis lost the stream (restart without AOF, FLUSHALL): recreate and carry on;
          // the dispatcher re-sends whatever has no result in SQLite.
          deps.log.warn('results stream group missing; recreating it');
          await ensureGroup().catch(() => undefined);
          cursor = '0';
        } else {
          deps.log.error({ err: e }, 'results consumer error; retrying');
          // Messages read but not stored are pending in our group: read them again first
          // (with '>' they would wait for the next restart).
          cursor = '0';
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }
  };
  const done = loop();
  return {
    async stop() {
      running = false;
      await done;
      reader.disconnect();
    },
  };
}

function safeMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string } };
    return parsed.error?.message ?? body;
  } catch {
    return body;
  }
}
