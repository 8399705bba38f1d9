import pino, { type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** What Fastify's request serializer reads (a FastifyRequest). */
interface LoggedRequest {
  method?: string;
  url?: string;
  host?: string;
  ip?: string;
  socket?: { remotePort?: number };
}

/**
 * A URL for the log: the path, and the query's parameter names without their values. Some
 * clients send the API key as a query parameter (`?api_key=sk-…`); Fastify's own serializer
 * logs the whole URL on every request.
 */
export function urlForLog(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  const q = url.indexOf('?');
  if (q < 0) return url;
  const names = url
    .slice(q + 1)
    .split('&')
    .filter(Boolean)
    .map((p) => `${p.split('=')[0]!.slice(0, 40)}=…`);
  return `${url.slice(0, q)}?${names.join('&')}`;
}

/**
 * The root logger. Authorization headers and API keys are redacted, query values are left out
 * of logged URLs; prompts and completions are never logged anywhere (log sizes and token
 * counts instead). The `req` serializer replaces Fastify's (a logger instance's serializers
 * win over Fastify's defaults).
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['req.headers.authorization', 'req.headers["x-api-key"]', 'headers.authorization', '*.apiKey', 'apiKey'],
        censor: '[redacted]',
      },
      serializers: {
        req: (req: LoggedRequest) => ({
          method: req.method,
          url: urlForLog(req.url),
          host: req.host,
          remoteAddress: req.ip,
          remotePort: req.socket?.remotePort,
        }),
      },
    },
    destination,
  );
}
