import pino, { type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * The root logger. Authorization headers and API keys are redacted; prompts and
 * completions are never logged anywhere (log sizes and token counts instead).
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
    },
    destination,
  );
}
