import OpenAI from 'openai';
import { CliError, EXIT } from './errors.js';

export const DEFAULT_BASE_URL = 'http://127.0.0.1:4080/v1';

/** Where the server is and how to authenticate: the same variables the OpenAI SDKs read. */
export interface CliEnv {
  /** OpenAI-compatible base URL, ending in /v1. */
  baseUrl: string;
  /** The server root (baseUrl without /v1), for /ops and /healthz. */
  rootUrl: string;
  apiKey: string | undefined;
}

/** The CLI is its own program: it reads its settings here, never the server's config. */
export function readCliEnv(env: NodeJS.ProcessEnv = process.env): CliEnv {
  const baseUrl = (env.OPENAI_BASE_URL?.trim() || DEFAULT_BASE_URL).replace(/\/+$/, '');
  return { baseUrl, rootUrl: baseUrl.replace(/\/v1$/, ''), apiKey: env.OPENAI_API_KEY?.trim() || undefined };
}

export function makeClient(env: CliEnv): OpenAI {
  // Open-mode servers ignore the key; the SDK insists on one.
  return new OpenAI({ baseURL: env.baseUrl, apiKey: env.apiKey ?? 'unused', maxRetries: 2, timeout: 60_000 });
}

/**
 * A call to the operator API (/ops/...), which the OpenAI SDK does not know. Errors become the
 * SDK's own APIError classes, so `explain()` words them the same way.
 */
export async function opsFetch(
  env: CliEnv,
  pathAndQuery: string,
  init: { signal?: AbortSignal; accept?: string } = {},
): Promise<Response> {
  const url = `${env.rootUrl}${pathAndQuery}`;
  const headers: Record<string, string> = { accept: init.accept ?? 'application/json' };
  if (env.apiKey) headers.authorization = `Bearer ${env.apiKey}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, ...(init.signal && { signal: init.signal }) });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new OpenAI.APIConnectionError({ cause: e as Error });
  }
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = { error: { message: text.slice(0, 200) || res.statusText } };
    }
    throw OpenAI.APIError.generate(res.status, body as object, undefined, res.headers);
  }
  return res;
}

export async function opsJson<T>(env: CliEnv, pathAndQuery: string): Promise<T> {
  return (await (await opsFetch(env, pathAndQuery)).json()) as T;
}

export function parsePositiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      throw new CliError(`${name} must be a positive integer, got "${v}".`, EXIT.usage);
    return n;
  };
}
