/**
 * Pure helpers of the inference proxy: which upstream failures mean "this engine is gone"
 * and what a client sees when an engine stops answering. No I/O.
 */
import type { OpenAIErrorEnvelope } from '../../domain/engine-error-body.js';

/**
 * Error codes meaning the connection to the engine failed before a response came back: it
 * refused, reset or closed the socket (a crashed or restarting engine), or its pool was
 * closed under us. Timeouts are not here: a slow engine is alive and is not skipped.
 */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** True when `err` (or an error in its `cause` chain, or an AggregateError member) is a connection failure. */
export function isConnectionError(err: unknown): boolean {
  const seen = new Set<unknown>();
  const visit = (e: unknown, depth: number): boolean => {
    if (depth > 8 || typeof e !== 'object' || e === null || seen.has(e)) return false;
    seen.add(e);
    const { code, cause, errors } = e as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
    if (Array.isArray(errors) && errors.some((x) => visit(x, depth + 1))) return true;
    return visit(cause, depth + 1);
  };
  return visit(err, 0);
}

/** A short description of an upstream failure for messages and logs ("ECONNREFUSED: connect ..."). */
export function describeFailure(err: unknown): string {
  if (typeof err !== 'object' || err === null) return String(err);
  const { code, message, cause } = err as { code?: unknown; message?: unknown; cause?: unknown };
  const own = [typeof code === 'string' ? code : null, typeof message === 'string' && message ? message : null]
    .filter(Boolean)
    .join(': ');
  if (own) return own;
  return cause ? describeFailure(cause) : 'unknown error';
}

/**
 * An SSE event carrying OpenAI's error envelope, for a failure after a stream has started
 * (the status line is already sent). The official SDKs throw an APIError when a `data:`
 * event has an `error` key, so the client sees a failure instead of a silently short answer.
 */
export function sseErrorEvent(envelope: OpenAIErrorEnvelope): string {
  return `data: ${JSON.stringify(envelope)}\n\n`;
}

/** The POST paths the proxy forwards, by route. */
export const INFERENCE_PATHS = ['/chat/completions', '/completions', '/embeddings'] as const;
export type InferencePath = (typeof INFERENCE_PATHS)[number];

/**
 * Validates the parsed request body and returns the model, or a client error. Everything
 * else in the body is the engine's business and passes through as sent.
 */
export function checkBody(
  body: unknown,
):
  | { ok: true; model: string; stream: boolean }
  | { ok: false; code: 'invalid_request' | 'missing_required_parameter'; message: string; param: string | null } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, code: 'invalid_request', message: 'The request body must be a JSON object.', param: null };
  }
  const { model, stream } = body as { model?: unknown; stream?: unknown };
  if (model === undefined || model === null) {
    return {
      ok: false,
      code: 'missing_required_parameter',
      message: "Missing required parameter: 'model'. See GET /v1/models for the models this server runs.",
      param: 'model',
    };
  }
  if (typeof model !== 'string' || model.length === 0) {
    return {
      ok: false,
      code: 'invalid_request',
      message: "'model' must be a non-empty string. See GET /v1/models for the models this server runs.",
      param: 'model',
    };
  }
  return { ok: true, model, stream: stream === true };
}
