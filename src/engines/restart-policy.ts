/** Crash accounting for one engine: pure, so the numbers are unit-tested without processes. */
export interface RestartPolicy {
  /** Restarts allowed within `windowMs` before giving up. @defaultValue 5 */
  maxRestarts: number;
  /** @defaultValue 10 min */
  windowMs: number;
  /** First backoff; doubles per recent failure. @defaultValue 1_000 */
  baseBackoffMs: number;
  /** @defaultValue 30_000 */
  maxBackoffMs: number;
  /** Uptime after which a ready engine's earlier failures are forgiven. @defaultValue 60_000 */
  stableUptimeMs: number;
}

export const defaultRestartPolicy: RestartPolicy = {
  maxRestarts: 5,
  windowMs: 10 * 60_000,
  baseBackoffMs: 1_000,
  maxBackoffMs: 30_000,
  stableUptimeMs: 60_000,
};

/** Failure times still inside the window. */
export function recentFailures(failures: readonly number[], now: number, p: RestartPolicy): number[] {
  return failures.filter((t) => now - t < p.windowMs);
}

/**
 * Failure history after a new failure at `now`. An engine that had been ready for at least
 * stableUptimeMs starts a fresh history: one crash after a day of service is not a crash loop.
 */
export function recordFailure(
  failures: readonly number[],
  now: number,
  readyAt: number | null,
  p: RestartPolicy,
): number[] {
  const stable = readyAt !== null && now - readyAt >= p.stableUptimeMs;
  return [...(stable ? [] : recentFailures(failures, now, p)), now];
}

/** True when another restart would exceed maxRestarts within the window. */
export function isRestartLimitReached(failures: readonly number[], now: number, p: RestartPolicy): boolean {
  return recentFailures(failures, now, p).length > p.maxRestarts;
}

/** How long to wait, from now, before restarting: base × 2^(n−1) after the last failure, capped. */
export function backoffRemainingMs(failures: readonly number[], now: number, p: RestartPolicy): number {
  const recent = recentFailures(failures, now, p);
  const last = recent[recent.length - 1];
  if (last === undefined) return 0;
  const backoff = Math.min(p.maxBackoffMs, p.baseBackoffMs * 2 ** Math.min(30, recent.length - 1));
  return Math.max(0, last + backoff - now);
}
