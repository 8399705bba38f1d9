import OpenAI from 'openai';

/**
 * Exit codes of the CLI (documented in docs/cli.md). Scripts branch on them, so they never
 * change meaning.
 */
export const EXIT = {
  ok: 0,
  /** The batch completed, but some of its requests failed (their lines are in the error file). */
  requestsFailed: 1,
  /** Bad command line, or a local file that cannot be read. */
  usage: 2,
  /** The server cannot be reached, or it refused the API key (401/403). */
  unreachable: 3,
  /** The batch did not complete: failed (e.g. validation), expired or cancelled. */
  batchNotCompleted: 4,
  /** The server answered with an error (404 not found, 409 conflict, other 4xx/5xx). */
  apiError: 5,
  /** An unexpected error inside the CLI itself (a bug): EX_SOFTWARE. */
  internal: 70,
  /** Interrupted (Ctrl-C). A batch being watched keeps running on the server. */
  interrupted: 130,
} as const;

/** A failure the CLI explains itself: one line, one exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The innermost `code` (ECONNREFUSED, ENOTFOUND, UND_ERR_*...) of an error's cause chain. */
function causeCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let i = 0; i < 5 && cur; i++) {
    const c = (cur as { code?: unknown }).code;
    if (typeof c === 'string' && /^[A-Z_]+$/.test(c)) return c;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The message at the bottom of the cause chain ("bad port", "getaddrinfo ENOTFOUND x"...). */
function innermostMessage(e: unknown): string | undefined {
  let cur = e as { cause?: unknown; message?: unknown } | undefined;
  let msg: string | undefined;
  for (let i = 0; i < 5 && cur; i++) {
    if (typeof cur.message === 'string' && cur.message) msg = cur.message;
    cur = cur.cause as typeof cur;
  }
  return msg;
}

function serverMessage(e: { error?: unknown; message: string }): string {
  const body = e.error as { message?: unknown } | undefined;
  return typeof body?.message === 'string' ? body.message : e.message;
}

/** Any error → the one line to print and the exit code. `baseUrl` names the server tried. */
export function explain(e: unknown, baseUrl: string): { line: string; exitCode: number } {
  if (e instanceof CliError) return { line: e.message, exitCode: e.exitCode };
  if (e instanceof OpenAI.APIConnectionTimeoutError) {
    return {
      line: `the server at ${baseUrl} did not answer in time: check that it is up (GET /healthz) and that OPENAI_BASE_URL points at it.`,
      exitCode: EXIT.unreachable,
    };
  }
  if (e instanceof OpenAI.APIConnectionError || isFetchFailure(e)) {
    const why = causeCode(e) ?? innermostMessage(e) ?? 'connection failed';
    return {
      line: `cannot reach the server at ${baseUrl} (${why}): is it running (npm start)? Set OPENAI_BASE_URL to its address, e.g. http://host:4080/v1.`,
      exitCode: EXIT.unreachable,
    };
  }
  if (e instanceof OpenAI.APIError && e.status !== undefined) {
    const msg = serverMessage(e);
    if (e.status === 401)
      return {
        line: `the server refused the API key (401): set OPENAI_API_KEY to a valid key (an operator creates one with "batchwright keys create"). Server said: ${msg}`,
        exitCode: EXIT.unreachable,
      };
    if (e.status === 403)
      return {
        line: `this API key may not do that (403): operator commands need an admin key. Server said: ${msg}`,
        exitCode: EXIT.unreachable,
      };
    const code = e.code ? ` ${e.code}` : '';
    return { line: `the server answered ${e.status}${code}: ${msg}`, exitCode: EXIT.apiError };
  }
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT' || err?.code === 'EACCES' || err?.code === 'EISDIR') {
    return {
      line: `cannot use ${err.path ?? 'the file'}: ${err.code === 'ENOENT' ? 'no such file or directory' : err.code === 'EACCES' ? 'permission denied' : 'it is a directory'}.`,
      exitCode: EXIT.usage,
    };
  }
  if (err?.code === 'ENOSPC')
    return {
      line: `the local disk is full: free space where the files are written (--out) and download again.`,
      exitCode: EXIT.usage,
    };
  return {
    line: `unexpected error (a bug in the CLI; please report it): ${(e as Error)?.message ?? String(e)}`,
    exitCode: EXIT.internal,
  };
}

function isFetchFailure(e: unknown): boolean {
  return e instanceof TypeError && e.message === 'fetch failed';
}
