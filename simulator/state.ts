/** Live counters of one simulator process, plus their /sim/stats and /metrics renderings. */
import type { SimConfig } from './config.js';
import { Scheduler } from './scheduler.js';
import { mulberry32 } from './text.js';

export class SimState {
  ready = false;
  readyAtMs: number | null = null;
  readonly scheduler: Scheduler;
  /** Seeded PRNG deciding --error-rate hits; one draw per valid inference request. */
  readonly rng: () => number;
  /** Inference requests that arrived (never reset: drives --crash-after). */
  arrived = 0;

  served = 0;
  aborted = 0;
  errors = 0;
  rejected = 0;
  busySlotMs = 0;
  promptTokens = 0;
  completionTokens = 0;

  constructor(readonly cfg: SimConfig) {
    this.scheduler = new Scheduler(cfg.maxConcurrency);
    this.rng = mulberry32(cfg.seed);
  }

  /** Zeroes counters; running/waiting are live values and stay; peakRunning restarts from the current load. */
  reset(): void {
    this.served = 0;
    this.aborted = 0;
    this.errors = 0;
    this.rejected = 0;
    this.busySlotMs = 0;
    this.promptTokens = 0;
    this.completionTokens = 0;
    this.scheduler.peakRunning = this.scheduler.running;
  }

  statsJson(): string {
    const s = this.scheduler;
    return JSON.stringify({
      served: this.served,
      running: s.running,
      waiting: s.waiting,
      peakRunning: s.peakRunning,
      aborted: this.aborted,
      errors: this.errors,
      rejected: this.rejected,
      busySlotMs: Math.round(this.busySlotMs * 1000) / 1000,
      promptTokens: this.promptTokens,
      completionTokens: this.completionTokens,
      arrived: this.arrived,
      readyAtMs: this.readyAtMs,
      model: this.cfg.model,
    });
  }

  metricsText(): string {
    const l = `{model_name=${JSON.stringify(this.cfg.model)}}`;
    const s = this.scheduler;
    const metric = (name: string, type: string, help: string, value: number) =>
      `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name}${l} ${value.toFixed(1)}\n`;
    return (
      metric('vllm:num_requests_running', 'gauge', 'Number of requests in model execution batches.', s.running) +
      metric('vllm:num_requests_waiting', 'gauge', 'Number of requests waiting to be processed.', s.waiting) +
      metric('vllm:prompt_tokens_total', 'counter', 'Number of prefill tokens processed.', this.promptTokens) +
      metric(
        'vllm:generation_tokens_total',
        'counter',
        'Number of generation tokens processed.',
        this.completionTokens,
      ) +
      metric('vllm:request_success_total', 'counter', 'Count of successfully processed requests.', this.served)
    );
  }
}
