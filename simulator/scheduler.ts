/** vLLM-like admission: at most `max` running jobs (0 = unlimited), the rest wait in FIFO order. */

export interface Slotted {
  /** Called when the job gets its running slot. */
  start(): void;
  /** Set by the scheduler: 'waiting' while queued, 'running' once started, 'cancelled' if withdrawn. */
  slot: 'none' | 'waiting' | 'running' | 'cancelled';
}

export class Scheduler {
  running = 0;
  waiting = 0;
  peakRunning = 0;
  private queue: (Slotted | undefined)[] = [];
  private head = 0;
  private draining = false;

  constructor(private readonly max: number) {}

  /** Starts the job now if a slot is free, else queues it. */
  submit(job: Slotted): void {
    if (this.max === 0 || this.running < this.max) this.run(job);
    else {
      job.slot = 'waiting';
      this.queue.push(job);
      this.waiting++;
    }
  }

  /** A running job finished or was aborted: hand its slot to the next waiting job. */
  release(job: Slotted): void {
    if (job.slot !== 'running') return;
    job.slot = 'none';
    this.running--;
    // Jobs may finish synchronously inside start(); the outer loop keeps draining instead of recursing.
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.waiting > 0 && (this.max === 0 || this.running < this.max)) {
        const next = this.shift();
        if (next) this.run(next);
      }
    } finally {
      this.draining = false;
    }
  }

  /** Withdraws a waiting job (client went away while queued). */
  cancel(job: Slotted): void {
    if (job.slot !== 'waiting') return;
    job.slot = 'cancelled';
    this.waiting--;
    // The entry stays in the array and is skipped by shift(); drop everything once nothing waits.
    if (this.waiting === 0 && !this.draining) {
      this.queue = [];
      this.head = 0;
    }
  }

  private shift(): Slotted | undefined {
    while (this.head < this.queue.length) {
      const j = this.queue[this.head];
      this.queue[this.head++] = undefined;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      if (j && j.slot === 'waiting') {
        this.waiting--;
        return j;
      }
    }
    return undefined;
  }

  private run(job: Slotted): void {
    job.slot = 'running';
    this.running++;
    if (this.running > this.peakRunning) this.peakRunning = this.running;
    job.start();
  }
}
