/**
 * Throughput and ETA from successive request counts. Pure, so the numbers the bar and the
 * plain lines show are tested without a server.
 */
export interface Sample {
  /** Milliseconds (any monotonic clock). */
  at: number;
  /** Requests with a result (completed + failed). */
  done: number;
}

export interface Rate {
  /** Requests per second over the window, null before two samples span any time. */
  perSecond: number | null;
  /** Seconds until every request has a result at that rate, null when unknown. */
  etaSeconds: number | null;
}

/** Keeps samples over the last `windowMs` (30 s): recent enough to follow a model swap. */
export class RateMeter {
  private samples: Sample[] = [];
  private lastChangeAt: number | null = null;

  constructor(private readonly windowMs = 30_000) {}

  add(s: Sample): void {
    const last = this.samples.at(-1);
    // A count that went down (a resumed or restarted batch) starts a new window.
    if (last && s.done < last.done) this.samples = [];
    if (!last || s.done !== last.done) this.lastChangeAt = s.at;
    this.samples.push(s);
    while (this.samples.length > 2 && s.at - this.samples[1]!.at >= this.windowMs) this.samples.shift();
  }

  rate(total: number): Rate {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.at <= first.at) return { perSecond: null, etaSeconds: null };
    const perSecond = ((last.done - first.done) * 1000) / (last.at - first.at);
    const remaining = Math.max(0, total - last.done);
    if (remaining === 0) return { perSecond, etaSeconds: 0 };
    return { perSecond, etaSeconds: perSecond > 0 ? remaining / perSecond : null };
  }

  /** Milliseconds since the count last changed (since the first sample if it never did). */
  stalledForMs(now: number): number {
    return this.lastChangeAt === null ? 0 : now - this.lastChangeAt;
  }
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function formatRate(perSecond: number | null): string {
  if (perSecond === null) return '-- req/s';
  return `${perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toFixed(1)} req/s`;
}
