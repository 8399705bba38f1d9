/** One admitted inference request: waits for a slot, "generates" on the configured clock, answers or streams. */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { EmbedPlan, GenPlan } from './requests.js';
import type { Slotted } from './scheduler.js';
import type { SimState } from './state.js';
import { embed, embeddingBase64, tokenPieces } from './text.js';

const JSON_HEADERS = { 'content-type': 'application/json' };
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' };

function hexId(): string {
  return randomUUID().replace(/-/g, '');
}

export class Job implements Slotted {
  slot: Slotted['slot'] = 'none';
  private done = false;
  private startedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly id: string;
  private readonly created = Math.floor(Date.now() / 1000);
  // streaming state
  private pieces: string[] = [];
  private sent = 0;
  private roleSent = false;

  constructor(
    private readonly state: SimState,
    private readonly res: ServerResponse,
    private readonly plan: GenPlan | EmbedPlan,
  ) {
    this.id = (plan.kind === 'chat' ? 'chatcmpl-' : plan.kind === 'completion' ? 'cmpl-' : 'embd-') + hexId();
    res.on('close', this.onClose);
    if (plan.kind !== 'embedding' && plan.stream) {
      // Like vLLM (Starlette StreamingResponse) the headers go out at once, even while queued.
      res.writeHead(200, SSE_HEADERS);
      res.flushHeaders();
    }
    state.scheduler.submit(this);
  }

  start(): void {
    this.startedAt = performance.now();
    const p = this.plan;
    const { ttftMs } = this.state.cfg;
    if (p.kind !== 'embedding' && p.stream) {
      this.pieces = tokenPieces(p.text);
      this.tick();
      return;
    }
    const tokens = p.kind === 'embedding' ? 1 : p.completionTokens;
    const delay = ttftMs + Math.max(0, tokens - 1) * this.interval();
    if (delay <= 0) this.respond();
    else this.timer = setTimeout(this.respond, delay);
  }

  private interval(): number {
    const tps = this.state.cfg.tokensPerSecond;
    return tps > 0 ? 1000 / tps : 0;
  }

  private finish(): void {
    this.done = true;
    this.state.busySlotMs += performance.now() - this.startedAt;
    this.state.scheduler.release(this);
  }

  private readonly onClose = (): void => {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.state.aborted++;
    if (this.slot === 'waiting') this.state.scheduler.cancel(this);
    else if (this.slot === 'running') {
      this.state.busySlotMs += performance.now() - this.startedAt;
      this.state.scheduler.release(this);
    }
  };

  private usage(): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
    const p = this.plan as GenPlan;
    const completion = p.completionTokens * p.n;
    return { prompt_tokens: p.promptTokens, completion_tokens: completion, total_tokens: p.promptTokens + completion };
  }

  private account(): void {
    const s = this.state;
    s.served++;
    s.promptTokens += this.plan.promptTokens;
    if (this.plan.kind !== 'embedding') s.completionTokens += this.plan.completionTokens * this.plan.n;
  }

  /** Non-streaming answer. */
  private readonly respond = (): void => {
    this.timer = undefined;
    if (this.done) return;
    const body = this.plan.kind === 'embedding' ? this.embeddingBody(this.plan) : this.completionBody(this.plan);
    this.account();
    this.finish();
    this.res.writeHead(200, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(body) });
    this.res.end(body);
  };

  private completionBody(p: GenPlan): string {
    const choices = [];
    for (let i = 0; i < p.n; i++) {
      choices.push(
        p.kind === 'chat'
          ? {
              index: i,
              message: { role: 'assistant', content: p.text },
              logprobs: null,
              finish_reason: p.finishReason,
              stop_reason: p.stopReason,
            }
          : { index: i, text: p.text, logprobs: null, finish_reason: p.finishReason, stop_reason: p.stopReason },
      );
    }
    return JSON.stringify({
      id: this.id,
      object: p.kind === 'chat' ? 'chat.completion' : 'text_completion',
      created: this.created,
      model: this.state.cfg.model,
      choices,
      usage: this.usage(),
    });
  }

  private embeddingBody(p: EmbedPlan): string {
    const dim = this.state.cfg.embeddingDim;
    return JSON.stringify({
      id: this.id,
      object: 'list',
      created: this.created,
      model: this.state.cfg.model,
      data: p.keys.map((k, index) => {
        const v = embed(k, dim);
        return { object: 'embedding', index, embedding: p.base64 ? embeddingBase64(v) : v };
      }),
      usage: { prompt_tokens: p.promptTokens, total_tokens: p.promptTokens },
    });
  }

  private chunk(choices: unknown[], usage?: unknown): string {
    const p = this.plan as GenPlan;
    const obj: Record<string, unknown> = {
      id: this.id,
      object: p.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created: this.created,
      model: this.state.cfg.model,
      choices,
    };
    if (usage) obj.usage = usage;
    return `data: ${JSON.stringify(obj)}\n\n`;
  }

  private choiceChunks(piece: string, last: boolean): string {
    const p = this.plan as GenPlan;
    let out = '';
    for (let i = 0; i < p.n; i++) {
      const fr = last ? p.finishReason : null;
      const sr = last ? p.stopReason : null;
      out += this.chunk([
        p.kind === 'chat'
          ? { index: i, delta: { content: piece }, logprobs: null, finish_reason: fr, stop_reason: sr }
          : { index: i, text: piece, logprobs: null, finish_reason: fr, stop_reason: sr },
      ]);
    }
    return out;
  }

  /** Streaming clock: token k is due at ttft + k / tokens-per-second; emits everything due, then sleeps. */
  private readonly tick = (): void => {
    this.timer = undefined;
    if (this.done) return;
    const p = this.plan as GenPlan;
    const ttft = this.state.cfg.ttftMs;
    const interval = this.interval();
    const elapsed = performance.now() - this.startedAt;
    if (elapsed < ttft) {
      this.timer = setTimeout(this.tick, Math.max(1, Math.ceil(ttft - elapsed)));
      return;
    }
    const total = this.pieces.length;
    let out = '';
    if (!this.roleSent) {
      this.roleSent = true;
      if (p.kind === 'chat') {
        for (let i = 0; i < p.n; i++) {
          out += this.chunk([
            { index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
          ]);
        }
      }
    }
    const due = interval > 0 ? Math.min(total, Math.floor((elapsed - ttft) / interval) + 1) : total;
    while (this.sent < due) {
      const k = this.sent++;
      out += this.choiceChunks(this.pieces[k]!, k === total - 1);
    }
    if (this.sent < total) {
      if (out) this.res.write(out);
      const next = ttft + this.sent * interval - elapsed;
      this.timer = setTimeout(this.tick, Math.max(1, Math.ceil(next)));
      return;
    }
    if (total === 0) out += this.choiceChunks('', true);
    if (p.includeUsage) out += this.chunk([], this.usage());
    out += 'data: [DONE]\n\n';
    this.account();
    this.finish();
    this.res.end(out);
  };
}
