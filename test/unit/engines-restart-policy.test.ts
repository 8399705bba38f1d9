import { describe, expect, it } from 'vitest';
import {
  backoffRemainingMs,
  defaultRestartPolicy as p,
  isRestartLimitReached,
  recordFailure,
} from '../../src/engines/restart-policy.js';

describe('restart policy', () => {
  it('doubles the backoff per recent failure, capped at 30 s', () => {
    expect(backoffRemainingMs([], 1000, p)).toBe(0);
    expect(backoffRemainingMs([1000], 1000, p)).toBe(1000);
    expect(backoffRemainingMs([0, 1000], 1000, p)).toBe(2000);
    expect(backoffRemainingMs([0, 1, 2, 3, 4, 5, 6, 1000], 1000, p)).toBe(30_000);
    expect(backoffRemainingMs([1000], 1600, p)).toBe(400);
  });

  it('gives up after maxRestarts within the window, and forgets old failures', () => {
    const five = [1, 2, 3, 4, 5];
    expect(isRestartLimitReached(five, 10, p)).toBe(false);
    expect(isRestartLimitReached([...five, 6], 10, p)).toBe(true);
    expect(isRestartLimitReached([...five, 6], 6 + p.windowMs, p)).toBe(false);
  });

  it('starts a fresh history after a stable uptime', () => {
    expect(recordFailure([1, 2, 3], 100, 50, p)).toEqual([1, 2, 3, 100]);
    expect(recordFailure([1, 2, 3], 50 + p.stableUptimeMs, 50, p)).toEqual([50 + p.stableUptimeMs]);
    expect(recordFailure([1, 2, 3], 100, null, p)).toEqual([1, 2, 3, 100]);
  });
});
