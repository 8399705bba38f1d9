import { assertMatchesSchema } from './openapi.js';

/**
 * OpenAI's API prints every key of a Batch or File, `null` where unset (and so do we, as the
 * SDK and docs/notes/openai-contract.md expect), but the published schema types those
 * keys without null: even the spec's own Batch example fails it. So before validating we drop
 * null-valued keys, except the ones the spec itself declares nullable and required.
 */
const NULL_ALLOWED = new Set(['param', 'code', 'metadata', 'response', 'error', 'line']);

export function dropUnsetKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropUnsetKeys);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (v === null && !NULL_ALLOWED.has(k)) continue;
      out[k] = dropUnsetKeys(v);
    }
    return out;
  }
  return value;
}

export function assertOpenAIShape(schemaName: string, value: unknown): void {
  assertMatchesSchema(schemaName, dropUnsetKeys(value));
}
