import { Agent, request } from 'undici';
import { pinnedLookup, vetDestination, type AllowList, type Resolver } from './ssrf.js';

export interface SendInput {
  url: string;
  body: string;
  headers: Record<string, string>;
  allow: AllowList;
  resolve?: Resolver;
  /** Connect + headers + body, each. @defaultValue 10_000 */
  timeoutMs?: number;
}

export type SendResult =
  | { ok: true; status: number }
  /** `retryable: false`: the guard refused the destination; trying again cannot help. */
  | { ok: false; status: number | null; error: string; retryable: boolean };

/** The most of a receiver's answer we read (and then throw away). */
const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * One POST of one event. The destination is vetted (every resolved address) and the socket
 * pinned to the vetted addresses. 2xx is delivered; a 3xx is not followed (a redirect to an
 * internal address is the classic way round an SSRF guard) and counts as a failure, like
 * 4xx, 5xx, timeouts and connection errors.
 */
export async function sendWebhook(input: SendInput): Promise<SendResult> {
  const timeoutMs = input.timeoutMs ?? 10_000;
  const vet = await vetDestination(input.url, input.allow, input.resolve);
  if (!vet.ok) return { ok: false, status: null, error: `refused: ${vet.reason}`, retryable: vet.retryable };
  const agent = new Agent({
    connect: { lookup: pinnedLookup(vet.addresses), timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 1,
    connections: 1,
  });
  try {
    const res = await request(vet.checked.url, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json', 'user-agent': 'batchwright-webhooks', ...input.headers },
      body: input.body,
      signal: AbortSignal.timeout(timeoutMs * 2),
    });
    await res.body.dump({ limit: MAX_RESPONSE_BYTES }).catch(() => undefined);
    const status = res.statusCode;
    if (status >= 200 && status < 300) return { ok: true, status };
    if (status >= 300 && status < 400)
      return {
        ok: false,
        status,
        error: `HTTP ${status}: redirects are not followed; give the receiver's final URL`,
        retryable: true,
      };
    return { ok: false, status, error: `HTTP ${status}`, retryable: true };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const code = err.code ?? err.name;
    return { ok: false, status: null, error: `${code}: ${err.message}`.slice(0, 500), retryable: true };
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}
