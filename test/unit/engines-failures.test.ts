import { describe, expect, it } from 'vitest';
import { toOpenAIErrorBody } from '../../src/domain/engine-error-body.js';
import { classifyFailure } from '../../src/engines/client.js';
import { EngineError } from '../../src/engines/errors.js';

const buf = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

describe('toOpenAIErrorBody', () => {
  it("normalises vLLM's flat error with an integer code", () => {
    const body = buf({
      object: 'error',
      message: 'max_tokens is too large',
      type: 'BadRequestError',
      param: 'max_tokens',
      code: 400,
    });
    expect(toOpenAIErrorBody(400, body)).toEqual({
      error: { message: 'max_tokens is too large', type: 'invalid_request_error', param: 'max_tokens', code: null },
    });
  });

  it('normalises the nested shape of newer vLLM releases', () => {
    const body = buf({ error: { message: 'bad', type: 'BadRequestError', param: null, code: 400 } });
    expect(toOpenAIErrorBody(400, body)).toEqual({
      error: { message: 'bad', type: 'invalid_request_error', param: null, code: null },
    });
  });

  it('maps 404 to model_not_found', () => {
    const body = buf({
      object: 'error',
      message: 'The model `x` does not exist.',
      type: 'NotFoundError',
      param: null,
      code: 404,
    });
    expect(toOpenAIErrorBody(404, body)).toEqual({
      error: {
        message: 'The model `x` does not exist.',
        type: 'invalid_request_error',
        param: null,
        code: 'model_not_found',
      },
    });
  });

  it('keeps string codes and maps 5xx to server_error', () => {
    expect(toOpenAIErrorBody(500, buf({ error: { message: 'boom', code: 'engine_dead' } }))).toEqual({
      error: { message: 'boom', type: 'server_error', param: null, code: 'engine_dead' },
    });
  });

  it('wraps non-JSON text and empty bodies', () => {
    expect(toOpenAIErrorBody(502, buf('Bad Gateway\n'))).toEqual({
      error: { message: 'engine returned HTTP 502: Bad Gateway', type: 'server_error', param: null, code: null },
    });
    expect(toOpenAIErrorBody(503, Buffer.alloc(0)).error.message).toBe('engine returned HTTP 503');
  });

  it('keeps JSON without a message readable (FastAPI 422 detail)', () => {
    const out = toOpenAIErrorBody(422, buf({ detail: [{ loc: ['body', 'messages'], msg: 'field required' }] }));
    expect(out.error.type).toBe('invalid_request_error');
    expect(out.error.message).toContain('field required');
  });
});

describe('classifyFailure', () => {
  it('retries 429 and 5xx, not other 4xx', () => {
    expect([429, 500, 502, 503].map(classifyFailure)).toEqual(['retry', 'retry', 'retry', 'retry']);
    expect([400, 401, 404, 413, 422].map(classifyFailure)).toEqual(['final', 'final', 'final', 'final', 'final']);
  });

  it('retries connection errors and undici timeouts, also when wrapped', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    const socket = Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' });
    const headers = Object.assign(new Error('Headers Timeout Error'), { code: 'UND_ERR_HEADERS_TIMEOUT' });
    expect([refused, socket, headers].map(classifyFailure)).toEqual(['retry', 'retry', 'retry']);
    const wrapped = new EngineError('ENGINE_REQUEST_FAILED', 'x', {}, { cause: socket });
    expect(classifyFailure(wrapped)).toBe('retry');
    expect(
      classifyFailure(
        new EngineError('ENGINE_REQUEST_FAILED', 'x', {}, { cause: new DOMException('t', 'TimeoutError') }),
      ),
    ).toBe('retry');
  });

  it('does not retry aborts, hopeless engines or unknown errors', () => {
    expect(classifyFailure(new DOMException('aborted', 'AbortError'))).toBe('final');
    expect(classifyFailure(new EngineError('ENGINE_RESTART_LIMIT', 'x'))).toBe('final');
    expect(classifyFailure(new EngineError('ENGINE_UNKNOWN_MODEL', 'x'))).toBe('final');
    expect(classifyFailure(new TypeError('bug'))).toBe('final');
    expect(classifyFailure(new EngineError('ENGINE_EXITED', 'x'))).toBe('retry');
  });
});
