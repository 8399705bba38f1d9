import { isUtf8 } from 'node:buffer';
import type { FastifyInstance } from 'fastify';
import { ApiError } from './errors.js';

/**
 * Fastify decodes a JSON body with replacement characters, so invalid UTF-8 would reach a
 * handler (and be stored, or forwarded to an engine) as U+FFFD. A body that is not UTF-8 is
 * refused instead, with a message that says so.
 */
export function invalidUtf8Body(buf: Buffer): ApiError | null {
  if (isUtf8(buf)) return null;
  return new ApiError(
    'invalid_json',
    'The request body is not valid UTF-8. Encode the JSON as UTF-8 (RFC 8259) and send it with Content-Type: application/json.',
  );
}

type Done = (err: Error | null, body?: unknown) => void;

/**
 * Replaces the instance's JSON parser with one that checks UTF-8 first, then parses with
 * Fastify's own (secure-json-parse: `__proto__` and `constructor.prototype` keys are errors).
 * `keep` receives the exact bytes (the inference proxy forwards them).
 */
export function useUtf8JsonParser(app: FastifyInstance, keep?: (req: unknown, buf: Buffer) => void): void {
  const defaultJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done: Done) => {
    const buf = body as Buffer;
    const bad = invalidUtf8Body(buf);
    if (bad) return done(bad, undefined);
    keep?.(req, buf);
    // Fastify's default JSON parser is the callback kind (it calls `done`); its type also admits the promise kind.
    void defaultJson(req, buf.toString('utf8'), done);
  });
}
