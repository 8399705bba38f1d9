/** A fixed set of resources (context sequences) handed out in FIFO order; waiters may give up. */
export class Pool<T> {
  private readonly free: T[];
  private readonly waiters: {
    resolve: (item: T) => void;
    reject: (err: unknown) => void;
    signal?: AbortSignal;
    onAbort?: () => void;
  }[] = [];
  /** Items handed out right now. */
  running = 0;

  constructor(items: readonly T[]) {
    this.free = [...items];
  }

  get waiting(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const item = this.free.shift();
    if (item !== undefined) {
      this.running++;
      return Promise.resolve(item);
    }
    return new Promise<T>((resolve, reject) => {
      const waiter: (typeof this.waiters)[number] = { resolve, reject };
      if (signal) {
        waiter.signal = signal;
        waiter.onAbort = () => {
          const i = this.waiters.indexOf(waiter);
          if (i !== -1) this.waiters.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  release(item: T): void {
    const next = this.waiters.shift();
    if (next) {
      if (next.onAbort) next.signal!.removeEventListener('abort', next.onAbort);
      next.resolve(item); // stays running: handed straight to the next waiter
      return;
    }
    this.running--;
    this.free.push(item);
  }
}
