/**
 * What to do about a failed engine request. Pure: no I/O. (How an engine's error body is shown
 * to a client, `toOpenAIErrorBody`, is in domain/engine-error-body.ts: the API uses it too.)
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
