import OpenAI from 'openai';
import { createKey } from '../../src/auth/keys-admin.js';
import type { TestServer } from './app.js';

/** Creates a key in the server's own database (the server sees it on its next request). */
export function addKey(server: TestServer, opts: { name?: string; project?: string; admin?: boolean } = {}): string {
  return createKey(server.app.deps.db, {
    name: opts.name ?? 'test',
    ...(opts.project !== undefined && { project: opts.project }),
    admin: opts.admin ?? false,
  }).secret;
}

/** The official SDK against the test server with this key (no SDK retries: tests see every answer). */
export function clientWith(server: TestServer, apiKey: string): OpenAI {
  return new OpenAI({ baseURL: `${server.baseUrl}/v1`, apiKey, maxRetries: 0 });
}

export interface ErrorEnvelope {
  error: { message: string; type: string; param: string | null; code: string | null };
}
