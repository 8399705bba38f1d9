/** Test helpers for the operator API and /metrics: Prometheus text, SSE over fetch, JSON GETs. */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (format 0.0.4) into samples; throws on a malformed line. */
export function parseProm(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The samples named `name` whose labels include `labels`. */
export function pick(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

export const sum = (samples: Sample[]) => samples.reduce((a, s) => a + s.value, 0);

export interface SseEvent {
  event: string;
  data: any;
}

/**
 * Reads a text/event-stream response (fetch streaming, as the dashboard does). `next()` waits
 * for the next event up to `ms`; comments are counted in `comments`.
 */
export function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const queue: SseEvent[] = [];
  /** Every event received, in order (skipped ones included). */
  const all: SseEvent[] = [];
  const state = { comments: 0, ended: false };
  const pump = async (): Promise<void> => {
    const { done, value } = await reader.read();
    if (done) {
      state.ended = true;
      return;
    }
    buf += decoder.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      const data: string[] = [];
      for (const l of block.split('\n')) {
        if (l.startsWith(':')) state.comments++;
        else if (l.startsWith('event: ')) event = l.slice(7);
        else if (l.startsWith('data: ')) data.push(l.slice(6));
      }
      if (data.length) {
        const e = { event, data: JSON.parse(data.join('\n')) };
        queue.push(e);
        all.push(e);
      }
    }
  };
  return {
    state,
    all,
    async next(ms = 30_000, match: (e: SseEvent) => boolean = () => true): Promise<SseEvent> {
      const deadline = Date.now() + ms;
      for (;;) {
        const idx = queue.findIndex(match);
        if (idx >= 0) return queue.splice(0, idx + 1)[idx]!; // earlier, non-matching events are skipped
        if (state.ended) throw new Error('the event stream ended');
        if (Date.now() > deadline) throw new Error(`no matching event within ${ms} ms`);
        await Promise.race([pump(), new Promise((r) => setTimeout(r, Math.max(1, deadline - Date.now())))]);
      }
    },
    /** Reads on until `cond()` holds (e.g. a heartbeat comment arrived), up to `ms`. */
    async until(cond: () => boolean, ms: number): Promise<void> {
      const deadline = Date.now() + ms;
      while (!cond()) {
        if (state.ended) throw new Error('the event stream ended');
        if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
        await Promise.race([pump(), new Promise((r) => setTimeout(r, Math.max(1, deadline - Date.now())))]);
      }
    },
    cancel: () => reader.cancel().catch(() => undefined),
  };
}
