/**
 * An engine's error body as a client sees it: OpenAI's error envelope. Pure: no I/O. Shared
 * by the worker (batch error lines) and the API's inference proxy (interactive answers), which
 * must not import engines/, so it lives here.
 */

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
