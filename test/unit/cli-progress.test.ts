import { describe, expect, it } from 'vitest';
import { formatDuration, formatRate, RateMeter } from '../../src/cli/progress.js';
import { statusLine } from '../../src/cli/watch.js';
import { modelStateReason, reasonText } from '../../src/cli/waiting.js';
import type { Batch } from 'openai/resources/batches';

describe('RateMeter', () => {
  it('gives throughput and ETA from successive counts', () => {
    const m = new RateMeter();
    expect(m.rate(100)).toEqual({ perSecond: null, etaSeconds: null });
    m.add({ at: 0, done: 0 });
    m.add({ at: 2000, done: 20 });
    expect(m.rate(100)).toEqual({ perSecond: 10, etaSeconds: 8 });
  });

  it('follows the recent rate, not the whole history', () => {
    const m = new RateMeter(10_000);
    m.add({ at: 0, done: 0 });
    m.add({ at: 10_000, done: 1000 }); // fast at first
    for (let t = 11_000; t <= 30_000; t += 1000) m.add({ at: t, done: 1000 + (t - 10_000) / 1000 }); // then 1 req/s
    expect(m.rate(2000).perSecond).toBeCloseTo(1, 5);
  });

  it('has no ETA while nothing moves, and measures how long it has stalled', () => {
    const m = new RateMeter();
    m.add({ at: 0, done: 5 });
    m.add({ at: 4000, done: 5 });
    expect(m.rate(10)).toEqual({ perSecond: 0, etaSeconds: null });
    expect(m.stalledForMs(4000)).toBe(4000);
    m.add({ at: 5000, done: 6 });
    expect(m.stalledForMs(5500)).toBe(500);
  });

  it('starts over when a count goes down', () => {
    const m = new RateMeter();
    m.add({ at: 0, done: 50 });
    m.add({ at: 1000, done: 10 });
    m.add({ at: 2000, done: 20 });
    expect(m.rate(100).perSecond).toBe(10);
  });
});

describe('formatting', () => {
  it('formats durations and rates', () => {
    expect(formatDuration(null)).toBe('--');
    expect(formatDuration(42.4)).toBe('42s');
    expect(formatDuration(125)).toBe('2m05s');
    expect(formatDuration(7260)).toBe('2h01m');
    expect(formatRate(null)).toBe('-- req/s');
    expect(formatRate(2.345)).toBe('2.3 req/s');
    expect(formatRate(123.4)).toBe('123 req/s');
  });

  it('writes one plain status line with counts, rate, ETA and the waiting reason', () => {
    const b = { id: 'batch_x', status: 'in_progress', request_counts: { total: 10, completed: 3, failed: 1 } } as Batch;
    expect(statusLine(b, { perSecond: 2, etaSeconds: 3 }, null)).toBe(
      'batch_x in_progress 4/10 (1 failed) 2.0 req/s ETA 3s',
    );
    expect(
      statusLine(
        { ...b, request_counts: { total: 0, completed: 0, failed: 0 }, status: 'validating' },
        { perSecond: null, etaSeconds: null },
        'the server is validating the input file',
      ),
    ).toBe('batch_x validating | waiting: the server is validating the input file');
  });
});

describe('waiting reasons', () => {
  it('reads the operator API reason as a string or an object', () => {
    expect(reasonText(null)).toBeNull();
    expect(reasonText('model m is loading')).toBe('model m is loading');
    expect(reasonText({ code: 'model_loading', message: 'model m is loading' })).toBe('model m is loading');
  });

  it('explains each model state that keeps a batch waiting', () => {
    expect(modelStateReason('m', 'loading')).toMatch(/model m is loading/);
    expect(modelStateReason('m', 'unloaded')).toMatch(/not loaded.*WORKER_MODELS/);
    expect(modelStateReason('m', 'failed')).toMatch(/failed to start.*batchwright logs <worker_id> m/);
    expect(modelStateReason('m', 'ready')).toBeNull();
  });
});
