import OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';
import { opsJson, type CliEnv } from './client.js';

/** Turns the operator API's `waiting_reason` (a string or an object) into one line. */
export function reasonText(v: unknown): string | null {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k of ['message', 'text', 'reason', 'detail']) if (typeof o[k] === 'string' && o[k]) return o[k];
    if (typeof o.code === 'string') return o.code;
  }
  return JSON.stringify(v);
}

/** What `GET /v1/models/{id}` `state` means for a batch that is not moving. */
export function modelStateReason(model: string, state: string | undefined): string | null {
  switch (state) {
    case 'loading':
      return `model ${model} is loading on a worker (an engine is starting; large models take minutes)`;
    case 'unloaded':
      return `model ${model} is not loaded: waiting for a worker that serves it to load it (is a worker running, with the model in WORKER_MODELS?)`;
    case 'failed':
      return `model ${model} failed to start on a worker: see its log with "batchwright logs <worker_id> ${model}" or DATA_DIR/logs/`;
    case 'sleeping':
      return `model ${model} is asleep on a worker and is being woken`;
    default:
      return null;
  }
}

/**
 * Why a batch is not moving, best source first: the operator API's `waiting_reason` (needs an
 * admin key when keys are on; once refused or missing it is not asked again), then the state of
 * the batch's model.
 */
export class WaitingExplainer {
  private opsUsable = true;

  constructor(
    private readonly env: CliEnv,
    private readonly client: OpenAI,
    private readonly modelHint?: string,
  ) {}

  async explain(batch: Batch): Promise<string | null> {
    if (this.opsUsable) {
      try {
        const ops = await opsJson<{ waiting_reason?: unknown }>(
          this.env,
          `/ops/batches/${encodeURIComponent(batch.id)}`,
        );
        const text = reasonText(ops.waiting_reason);
        if (text) return text;
      } catch (e) {
        // 401/403 (not an admin key), 404 (an older server without /ops): use the models API.
        if (e instanceof OpenAI.APIError && e.status !== undefined && e.status < 500) this.opsUsable = false;
      }
    }
    const model = (batch as Batch & { model?: string | null }).model ?? this.modelHint;
    if (!model) return batch.status === 'validating' ? 'the server is validating the input file' : null;
    try {
      const m = (await this.client.models.retrieve(model)) as OpenAI.Models.Model & { state?: string };
      const r = modelStateReason(model, m.state);
      if (r) return r;
    } catch {
      // the model's state is a hint only
    }
    return batch.status === 'validating' ? 'the server is validating the input file' : null;
  }
}
