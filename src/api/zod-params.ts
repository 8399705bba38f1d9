import type { z } from 'zod';
import { ApiError } from './errors.js';

/** Client-chosen names (object keys) in a message or `param`: at most 100 characters. */
function clip(s: string, n = 100): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

/** Parses with zod; the first issue becomes a 400 in OpenAI's envelope with `param` from its path. */
export function parseOr400<S extends z.ZodType>(schema: S, value: unknown, paramPrefix = ''): z.infer<S> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  // Path segments can be keys the client chose (metadata keys): clipped, like the keys below.
  const path = issue.path.map((p) => clip(String(p))).join('.');
  const param = path ? `${paramPrefix}${path}` : null;
  if (issue.code === 'unrecognized_keys') {
    const key = clip(issue.keys[0] ?? '');
    throw new ApiError(
      'invalid_request',
      `Unknown parameter: '${paramPrefix}${path ? `${path}.` : ''}${key}'.`,
      `${paramPrefix}${path ? `${path}.` : ''}${key}`,
    );
  }
  const missing = issue.code === 'invalid_type' && issue.input === undefined;
  throw new ApiError(
    missing ? 'missing_required_parameter' : 'invalid_request',
    missing
      ? `Missing required parameter: '${param}'.`
      : `Invalid value for '${param ?? 'body'}': ${clip(issue.message, 300)}.`,
    param,
  );
}
