import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { parseMetadata } from '../../src/cli/commands/batches.js';
import { readCliEnv } from '../../src/cli/client.js';
import { CliError, EXIT, explain } from '../../src/cli/errors.js';
import { parseSse } from '../../src/cli/sse.js';

const URL = 'http://gpu-box:4080/v1';

describe('explain', () => {
  it('names the URL and what to check when the server cannot be reached', () => {
    const cause = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    const r = explain(new OpenAI.APIConnectionError({ cause }), URL);
    expect(r.exitCode).toBe(EXIT.unreachable);
    expect(r.line).toContain(`cannot reach the server at ${URL} (ECONNREFUSED)`);
    expect(r.line).toContain('OPENAI_BASE_URL');
  });

  it('tells a 401 to set OPENAI_API_KEY and a 403 that it needs an admin key', () => {
    const e401 = OpenAI.APIError.generate(
      401,
      { error: { message: 'Missing API key.', code: 'missing_api_key' } },
      undefined,
      new Headers(),
    );
    expect(explain(e401, URL)).toMatchObject({
      exitCode: EXIT.unreachable,
      line: expect.stringContaining('set OPENAI_API_KEY'),
    });
    const e403 = OpenAI.APIError.generate(403, { error: { message: 'Admins only.' } }, undefined, new Headers());
    expect(explain(e403, URL).line).toContain('admin key');
  });

  it('quotes the server for other API errors, on one line', () => {
    const e = OpenAI.APIError.generate(
      404,
      { error: { message: 'No batch with id batch_x.', code: 'batch_not_found' } },
      undefined,
      new Headers(),
    );
    expect(explain(e, URL)).toEqual({
      exitCode: EXIT.apiError,
      line: 'the server answered 404 batch_not_found: No batch with id batch_x.',
    });
  });

  it('keeps its own errors and words local file errors as usage errors', () => {
    expect(explain(new CliError('bad', EXIT.usage), URL)).toEqual({ line: 'bad', exitCode: EXIT.usage });
    const enoent = Object.assign(new Error('ENOENT'), { code: 'ENOENT', path: 'x.jsonl' });
    expect(explain(enoent, URL)).toEqual({
      line: 'cannot use x.jsonl: no such file or directory.',
      exitCode: EXIT.usage,
    });
    expect(explain(new Error('boom'), URL).exitCode).toBe(EXIT.internal);
  });
});

describe('CLI settings', () => {
  it('defaults to the local server and strips /v1 for the operator API', () => {
    expect(readCliEnv({})).toEqual({
      baseUrl: 'http://127.0.0.1:4080/v1',
      rootUrl: 'http://127.0.0.1:4080',
      apiKey: undefined,
    });
    expect(readCliEnv({ OPENAI_BASE_URL: 'https://bw.example/v1/', OPENAI_API_KEY: 'bw-x' })).toEqual({
      baseUrl: 'https://bw.example/v1',
      rootUrl: 'https://bw.example',
      apiKey: 'bw-x',
    });
  });

  it('parses --metadata pairs', () => {
    expect(parseMetadata([])).toBeUndefined();
    expect(parseMetadata(['team=a', 'run=x=y'])).toEqual({ team: 'a', run: 'x=y' });
    expect(() => parseMetadata(['novalue'])).toThrow(/key=value/);
  });
});

describe('parseSse', () => {
  async function* chunks(...parts: string[]) {
    for (const p of parts) yield new TextEncoder().encode(p);
  }

  it('parses events split across chunks, skips comments, handles CRLF', async () => {
    const events = [];
    for await (const e of parseSse(
      chunks(
        ': connected\n\nevent: li',
        'ne\ndata: {"t":1,"line":"a"}\n\n',
        'event: line\r\ndata: x\r\ndata: y\r\n\r\n',
      ),
    ))
      events.push(e);
    expect(events).toEqual([
      { event: 'line', data: '{"t":1,"line":"a"}' },
      { event: 'line', data: 'x\ny' },
    ]);
  });
});
