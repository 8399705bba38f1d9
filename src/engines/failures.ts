/**
 * What to do about a failed engine request, and how to show an engine's error body to a
 * client. Pure functions: no I/O.
 */

export type FailureClass = 'retry' | 'final';

/** Error codes that mean "the request may succeed if sent again" (to this or a restarted engine). */
const RETRY_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
  'ENGINE_EXITED',
  'ENGINE_START_FAILED',
  'ENGINE_GPU_MEMORY',
  'ENGINE_HEALTH_TIMEOUT',
  'ENGINE_SHUTDOWN',
]);

/**
 * 'retry' for connection failures, timeouts, a dead or restarting engine, HTTP 429 and
 * 5xx; 'final' for other 4xx, for a caller's own abort, for ENGINE_RESTART_LIMIT /
 * ENGINE_UNKNOWN_MODEL and for errors we do not recognise (bugs are not retried).
 * Wrapped errors are classified by their `cause` chain.
 */
export function classifyFailure(failure: unknown): FailureClass {
  if (typeof failure === 'number') return failure === 429 || failure === 408 || failure >= 500 ? 'retry' : 'final';
  let e: unknown = failure;
  for (let depth = 0; depth < 8 && typeof e === 'object' && e !== null; depth++) {
    const { code, name, status } = e as { code?: unknown; name?: unknown; status?: unknown };
    if (typeof status === 'number') return classifyFailure(status);
    if (typeof code === 'string' && RETRY_CODES.has(code)) return 'retry';
    if (name === 'TimeoutError') return 'retry'; // AbortSignal.timeout(): our per-request deadline
    if (name === 'AbortError') return 'final'; // the caller cancelled
    e = (e as { cause?: unknown }).cause;
  }
  return 'final';
}

export interface OpenAIErrorEnvelope {
  error: { message: string; type: string; param: string | null; code: string | null };
}

function typeForStatus(status: number): string {
  if (status >= 500) return 'server_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return 'invalid_request_error';
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);

/**
 * Engine error body → OpenAI's envelope `{error:{message,type,param,code}}`. Accepts vLLM's
 * flat `{object:'error',message,type,param,code:int}`, the nested `{error:{…}}` of newer
 * releases, and plain text. `type` follows the HTTP status (vLLM's own types such as
 * 'BadRequestError' are not OpenAI's); integer codes become null, except 404 → 'model_not_found'.
 */
export function toOpenAIErrorBody(status: number, body: Buffer): OpenAIErrorEnvelope {
  const parsed = parseJson(body);
  const obj = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  const inner =
    obj && typeof obj.error === 'object' && obj.error !== null ? (obj.error as Record<string, unknown>) : obj;
  const text = body.toString('utf8').trim();
  const message =
    str(inner?.message) ??
    str(typeof obj?.error === 'string' ? obj.error : undefined) ??
    str(obj?.detail) ??
    (text ? `engine returned HTTP ${status}: ${text.slice(0, 500)}` : `engine returned HTTP ${status}`);
  const code = str(inner?.code) ?? (status === 404 ? 'model_not_found' : null);
  return { error: { message, type: typeForStatus(status), param: str(inner?.param), code } };
}
