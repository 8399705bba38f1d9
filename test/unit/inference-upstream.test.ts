import { describe, expect, it } from 'vitest';
import { checkBody, describeFailure, isConnectionError, sseErrorEvent } from '../../src/api/proxy/upstream.js';

describe('isConnectionError', () => {
  const withCode = (code: string, message = 'boom') => Object.assign(new Error(message), { code });

  it('recognises refused, reset and closed sockets, directly or in the cause chain', () => {
    for (const code of [
      'ECONNREFUSED',
      'ECONNRESET',
      'EPIPE',
      'UND_ERR_SOCKET',
      'UND_ERR_CLOSED',
      'UND_ERR_DESTROYED',
      'UND_ERR_CONNECT_TIMEOUT',
    ]) {
      expect(isConnectionError(withCode(code)), code).toBe(true);
      expect(isConnectionError(new Error('wrapped', { cause: withCode(code) })), code).toBe(true);
    }
    expect(isConnectionError(new AggregateError([withCode('ECONNREFUSED')], 'all failed'))).toBe(true);
  });

  it('does not treat timeouts, aborts, HTTP errors or unknown values as connection failures', () => {
    for (const code of ['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_ABORTED', 'ERR_INVALID_ARG_TYPE']) {
      expect(isConnectionError(withCode(code)), code).toBe(false);
    }
    expect(isConnectionError(new DOMException('aborted', 'AbortError'))).toBe(false);
    expect(isConnectionError(null)).toBe(false);
    expect(isConnectionError('ECONNREFUSED')).toBe(false);
    const loop: { code?: string; cause?: unknown } = {};
    loop.cause = loop;
    expect(isConnectionError(loop)).toBe(false);
  });
});

describe('describeFailure', () => {
  it('names the code and message', () => {
    expect(
      describeFailure(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })),
    ).toBe('ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1');
    expect(describeFailure({ cause: { code: 'UND_ERR_SOCKET' } })).toBe('UND_ERR_SOCKET');
    expect(describeFailure(42)).toBe('42');
  });
});

describe('checkBody', () => {
  it('returns the model and whether the client asked for a stream', () => {
    expect(checkBody({ model: 'm', messages: [] })).toEqual({ ok: true, model: 'm', stream: false });
    expect(checkBody({ model: 'm', stream: true })).toEqual({ ok: true, model: 'm', stream: true });
    expect(checkBody({ model: 'm', stream: 'yes' })).toEqual({ ok: true, model: 'm', stream: false });
  });

  it('asks for a model when there is none', () => {
    expect(checkBody({ messages: [] })).toMatchObject({
      ok: false,
      code: 'missing_required_parameter',
      param: 'model',
    });
    expect(checkBody({ model: null })).toMatchObject({ ok: false, code: 'missing_required_parameter', param: 'model' });
  });

  it('rejects a model that is not a non-empty string, and bodies that are not objects', () => {
    expect(checkBody({ model: 7 })).toMatchObject({ ok: false, code: 'invalid_request', param: 'model' });
    expect(checkBody({ model: '' })).toMatchObject({ ok: false, code: 'invalid_request', param: 'model' });
    for (const body of [[], 'text', 1, null, undefined])
      expect(checkBody(body)).toMatchObject({ ok: false, code: 'invalid_request', param: null });
  });
});

describe('sseErrorEvent', () => {
  it('is one data event carrying the envelope', () => {
    const env = { error: { message: 'm', type: 'server_error', param: null, code: 'service_unavailable' } };
    const ev = sseErrorEvent(env);
    expect(ev.startsWith('data: ')).toBe(true);
    expect(ev.endsWith('\n\n')).toBe(true);
    expect(JSON.parse(ev.slice(6))).toEqual(env);
  });
});
