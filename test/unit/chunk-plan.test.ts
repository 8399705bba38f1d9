import { describe, expect, it } from 'vitest';
import { chunkPlan } from '../../src/queue/jobs.js';

describe('chunkPlan', () => {
  it('keeps the one-worker plan unchanged (active + about one engine-full waiting)', () => {
    expect(chunkPlan(64, 32)).toEqual({ active: 4, queued: 6 });
    expect(chunkPlan(16, 32)).toEqual({ active: 2, queued: 4 });
    expect(chunkPlan(64, 32, 1)).toEqual(chunkPlan(64, 32));
  });

  it('queues a plan per live worker, each worker running the same number of chunks', () => {
    for (const k of [2, 3, 4, 16]) {
      const p = chunkPlan(64, 32, k);
      expect(p.active).toBe(chunkPlan(64, 32).active);
      expect(p.queued).toBe(k * chunkPlan(64, 32).queued);
      // Every worker can fill its active chunks, with some left waiting for the first to free a slot.
      expect(p.queued).toBeGreaterThan(k * p.active);
    }
  });

  it('sizes for one worker when the count is missing or nonsense', () => {
    expect(chunkPlan(16, 32, 0)).toEqual(chunkPlan(16, 32));
    expect(chunkPlan(16, 32, -3)).toEqual(chunkPlan(16, 32));
    expect(chunkPlan(16, 32, 2.7)).toEqual(chunkPlan(16, 32, 2));
  });
});
