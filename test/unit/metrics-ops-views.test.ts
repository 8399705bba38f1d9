import { describe, expect, it } from 'vitest';
import { RateWindow, toOpsBatch, waitingReason } from '../../src/ops/views.js';
import type { OpsBatchRow } from '../../src/store/ops-repo.js';
import type { WorkerHeartbeat } from '../../src/queue/jobs.js';

const row = (over: Partial<OpsBatchRow> = {}): OpsBatchRow => ({
  id: 'batch_a',
  status: 'in_progress',
  model: 'm1',
  endpoint: '/v1/chat/completions',
  createdAt: 1000,
  inProgressAt: 1001,
  finalizingAt: null,
  completedAt: null,
  failedAt: null,
  expiredAt: null,
  cancellingAt: null,
  cancelledAt: null,
  total: 100,
  completed: 10,
  failed: 0,
  metadata: null,
  errors: null,
  ending: null,
  ...over,
});
const now = 1_000_000;
const hb = (engines: WorkerHeartbeat['engines'], over: Partial<WorkerHeartbeat> = {}): WorkerHeartbeat => ({
  workerId: 'w1',
  models: ['m1', 'm2'],
  activeModel: 'm1',
  engines,
  at: now,
  ...over,
});
const engine = (model: string, state: string, since = now - 12_000) => ({
  model,
  state,
  baseUrl: null,
  lastError: state === 'failed' ? 'exited with code 1' : null,
  since,
});

describe('waitingReason', () => {
  it('names what a stalled batch waits for, in order: no worker, loading, failed, another model, an earlier batch', () => {
    expect(waitingReason(row(), 0, [], [], now)).toBe('no live worker serves model m1');
    expect(waitingReason(row(), 0, [hb([], { models: ['m2'] })], [], now)).toBe('no live worker serves model m1');
    expect(waitingReason(row(), 0, [hb([engine('m1', 'starting')])], [], now)).toBe(
      'model m1 is loading on worker w1 (since 12 s)',
    );
    expect(waitingReason(row(), 0, [hb([engine('m1', 'failed')])], [], now)).toBe(
      'model m1 failed on worker w1: exited with code 1',
    );
    expect(waitingReason(row(), 0, [hb([engine('m2', 'ready')], { activeModel: 'm2' })], [], now)).toBe(
      'worker w1 is serving model m2; model m1 waits for its turn',
    );
    expect(waitingReason(row(), 0, [hb([engine('m1', 'ready')])], ['batch_z'], now)).toBe('queued behind batch_z');
    expect(waitingReason(row(), 0, [hb([])], [], now)).toBe('model m1 is not loaded yet');
  });

  it('is null while the batch progresses, or when it is not running', () => {
    expect(waitingReason(row(), 3.5, [], [], now)).toBeNull();
    expect(waitingReason(row(), 0, [hb([engine('m1', 'ready')])], [], now)).toBeNull();
    expect(waitingReason(row({ status: 'validating' }), 0, [], [], now)).toBeNull();
    expect(waitingReason(row({ status: 'completed', completed: 100 }), 0, [], [], now)).toBeNull();
  });
});

describe('toOpsBatch', () => {
  it('computes progress and eta from the recent rate; eta is null when nothing moves, 0 once done', () => {
    expect(toOpsBatch(row(), 9, null)).toMatchObject({
      progress: 0.1,
      throughput_rps: 9,
      eta_s: 10,
      request_counts: { total: 100, completed: 10, failed: 0 },
    });
    expect(toOpsBatch(row(), 0, 'x')).toMatchObject({ eta_s: null, waiting_reason: 'x' });
    expect(toOpsBatch(row({ status: 'completed', completed: 95, failed: 5 }), 0, null)).toMatchObject({
      progress: 1,
      eta_s: 0,
    });
    expect(toOpsBatch(row({ metadata: '{"a":"b"}' }), 0, null).metadata).toEqual({ a: 'b' });
  });
});

describe('RateWindow', () => {
  it('is the done-count slope over the window, forgetting older samples', () => {
    const r = new RateWindow(30_000);
    expect(r.rate('b')).toBe(0);
    r.record('b', 0, 0);
    expect(r.rate('b')).toBe(0);
    r.record('b', 100, 10_000);
    expect(r.rate('b')).toBe(10);
    r.record('b', 100, 40_000); // the burst left the window: the slope is over [10 s, 40 s]
    r.record('b', 100, 50_000);
    expect(r.rate('b')).toBe(0);
    r.retain(new Set());
    expect(r.rate('b')).toBe(0);
  });
});
