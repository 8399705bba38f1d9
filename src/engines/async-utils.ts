import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Runs tasks one at a time, in call order: the ModelManager's single writer. A task's
 * failure is its caller's; it never stalls the tasks queued behind it.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every task queued so far has settled. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}

/**
 * `work`, but rejecting with `signal.reason` as soon as the signal aborts. The work itself
 * goes on (it may be shared); if it resolves after the caller has gone, `onOrphan` gets the
 * value so a resource taken for that caller (an in-flight slot) can be given back.
 */
export function abortable<T>(
  work: Promise<T>,
  signal: AbortSignal | undefined,
  onOrphan?: (value: T) => void,
): Promise<T> {
  if (!signal) return work;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = () => {
      if (settled) return;
      settled = true;
      reject(signal.reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (settled) onOrphan?.(v);
        else {
          settled = true;
          resolve(v);
        }
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          reject(err);
        }
      },
    );
  });
}

/** Sleeps `ms`, or rejects with the signal's reason when it aborts first. */
export async function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return signal?.throwIfAborted();
  await sleep(ms, undefined, signal ? { signal } : undefined).catch((err) => {
    throw signal?.aborted ? signal.reason : err;
  });
}

/** Combines optional signals; undefined when there are none. */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const s = signals.filter((x): x is AbortSignal => x !== undefined);
  return s.length <= 1 ? s[0] : AbortSignal.any(s);
}
