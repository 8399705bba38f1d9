/**
 * The one error catalogue. Every error a client can receive has a stable `code`, OpenAI's
 * `type`, an HTTP status and a message that says what to do next. docs/errors.md lists
 * every code (a test fails on drift in either direction).
 */
export const errorCatalogue = {
  invalid_request: { status: 400, type: 'invalid_request_error' },
  invalid_json: { status: 400, type: 'invalid_request_error' },
  invalid_multipart: { status: 400, type: 'invalid_request_error' },
  missing_required_parameter: { status: 400, type: 'invalid_request_error' },
  invalid_purpose: { status: 400, type: 'invalid_request_error' },
  invalid_file_for_batch: { status: 400, type: 'invalid_request_error' },
  invalid_webhook_url: { status: 400, type: 'invalid_request_error' },
  unsupported_media_type: { status: 415, type: 'invalid_request_error' },
  file_too_large: { status: 413, type: 'invalid_request_error' },
  request_too_large: { status: 413, type: 'invalid_request_error' },
  file_not_found: { status: 404, type: 'invalid_request_error' },
  batch_not_found: { status: 404, type: 'invalid_request_error' },
  model_not_found: { status: 404, type: 'invalid_request_error' },
  result_not_found: { status: 404, type: 'invalid_request_error' },
  route_not_found: { status: 404, type: 'invalid_request_error' },
  method_not_allowed: { status: 405, type: 'invalid_request_error' },
  file_in_use: { status: 409, type: 'invalid_request_error' },
  batch_not_cancellable: { status: 409, type: 'invalid_request_error' },
  idempotency_conflict: { status: 409, type: 'invalid_request_error' },
  invalid_api_key: { status: 401, type: 'invalid_request_error' },
  admin_required: { status: 403, type: 'invalid_request_error' },
  rate_limit_exceeded: { status: 429, type: 'requests' },
  too_many_active_batches: { status: 429, type: 'invalid_request_error' },
  request_timeout: { status: 408, type: 'invalid_request_error' },
  insufficient_storage: { status: 507, type: 'server_error' },
  service_unavailable: { status: 503, type: 'server_error' },
  internal_error: { status: 500, type: 'server_error' },
} as const;

export type ErrorCode = keyof typeof errorCatalogue;

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error that renders as OpenAI's envelope with a known status (and optional headers). */
export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly type: string;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = errorCatalogue[code].status;
    this.type = errorCatalogue[code].type;
  }
}

export function toOpenAIError(
  message: string,
  type: string,
  param: string | null,
  code: string | null,
): OpenAIErrorBody {
  return { error: { message, type, param, code } };
}
