/**
 * Proves that test/helpers/openapi.ts catches contract violations (and is not lenient by accident).
 *
 * What OpenAI's openapi.yaml (test/fixtures/openai/openapi.yaml) says about the objects we serve
 * ("nullable" = the schema allows JSON null; every other field must be absent rather than null):
 *
 * Batch            required: id, object ("batch"), endpoint, input_file_id, completion_window, status, created_at.
 *                  optional, NOT nullable: model (string), errors (object), output_file_id, error_file_id (string),
 *                    in_progress_at, expires_at, finalizing_at, completed_at, failed_at, expired_at,
 *                    cancelling_at, cancelled_at (integer, format unixtime), request_counts, usage.
 *                  optional, nullable: metadata (object of string values, or null).
 *                  status enum: validating | failed | in_progress | finalizing | completed | expired | cancelling | cancelled.
 *                  => a null output_file_id / *_at / errors FAILS. OpenAI's own example responses in the same file
 *                     print those as null, but the schema does not allow it: omit such keys instead.
 *   errors         { object?: string, data?: BatchError[] }, nothing required.
 *   BatchError     { code?: string, message?: string, param?: string|null, line?: integer|null }, nothing required.
 *   request_counts (BatchRequestCounts) required: total, completed, failed (integers).
 *   usage          required: input_tokens, input_tokens_details {cached_tokens}, output_tokens,
 *                  output_tokens_details {reasoning_tokens}, total_tokens (all integers, nested keys required too).
 * ListBatchesResponse required: object ("list"), data (Batch[]), has_more (boolean); optional: first_id, last_id
 *                  (string, not nullable: omit them on an empty page).
 * OpenAIFile       required: id, object ("file"), bytes (integer), created_at (integer), filename, purpose, status.
 *                  optional: expires_at (integer, not nullable), status_details (string, not nullable).
 *                  purpose enum: assistants | assistants_output | batch | batch_output | fine-tune |
 *                    fine-tune-results | vision | user_data.  status enum (deprecated but required):
 *                    uploaded | processed | error.
 * ListFilesResponse required: object (any string; "list"), data (OpenAIFile[]), first_id, last_id (strings, NOT
 *                  nullable: even an empty page must carry strings), has_more (boolean).
 * DeleteFileResponse required: id, object ("file"), deleted (boolean).
 * Error            required: type, message (strings), param, code (string or null: required keys that may be null).
 * ErrorResponse    required: error (Error).
 * BatchRequestOutput (batch-lines.yaml; the same schema for output-file and error-file lines): nothing required;
 *                  id, custom_id (string); response (nullable object: status_code integer, request_id string,
 *                  body object); error (nullable object: code string, message string).
 * BatchRequestInput (batch-lines.yaml): nothing required; custom_id (string), method (enum ["POST"]), url (string);
 *                  `body` is not even declared (extra keys are allowed).
 */
import { describe, expect, it } from 'vitest';
import { assertMatchesSchema, schemaNames } from '../helpers/openapi.js';

const file = {
  id: 'file-abc123',
  object: 'file',
  bytes: 120000,
  created_at: 1677610602,
  expires_at: 1680202602,
  filename: 'requests.jsonl',
  purpose: 'batch',
  status: 'processed',
};

const completedBatch = {
  id: 'batch_abc123',
  object: 'batch',
  endpoint: '/v1/chat/completions',
  model: 'llama-3.1-8b',
  errors: {
    object: 'list',
    data: [{ code: 'invalid_json', message: 'line 3 is not JSON', param: null, line: 3 }],
  },
  input_file_id: 'file-abc123',
  completion_window: '24h',
  status: 'completed',
  output_file_id: 'file-out456',
  error_file_id: 'file-err789',
  created_at: 1711471533,
  in_progress_at: 1711471538,
  expires_at: 1711557933,
  finalizing_at: 1711493133,
  completed_at: 1711493163,
  failed_at: 1711493164,
  expired_at: 1711493165,
  cancelling_at: 1711493166,
  cancelled_at: 1711493167,
  request_counts: { total: 100, completed: 95, failed: 5 },
  usage: {
    input_tokens: 1500,
    input_tokens_details: { cached_tokens: 1024 },
    output_tokens: 500,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: 2000,
  },
  metadata: { customer_id: 'user_123456789' },
};

function without<T extends object>(obj: T, key: keyof T): Partial<T> {
  const copy = { ...obj };
  delete copy[key];
  return copy;
}

describe('openapi contract helper', () => {
  it('exposes the openapi.yaml and batch-lines.yaml schemas by name', () => {
    const names = schemaNames();
    for (const n of [
      'OpenAIFile',
      'ListFilesResponse',
      'DeleteFileResponse',
      'Batch',
      'ListBatchesResponse',
      'Error',
      'ErrorResponse',
      'CreateChatCompletionResponse',
      'CreateCompletionResponse',
      'CreateEmbeddingResponse',
      'ListModelsResponse',
      'Model',
      'BatchRequestInput',
      'BatchRequestOutput',
    ]) {
      expect(names).toContain(n);
    }
    expect(() => assertMatchesSchema('NoSuchSchema', {})).toThrow(/no schema named "NoSuchSchema"/);
  });

  describe('OpenAIFile', () => {
    it('accepts a valid file object', () => {
      expect(() => assertMatchesSchema('OpenAIFile', file)).not.toThrow();
      expect(() => assertMatchesSchema('OpenAIFile', without(file, 'expires_at'))).not.toThrow();
    });

    it('rejects a missing required key', () => {
      expect(() => assertMatchesSchema('OpenAIFile', without(file, 'filename'))).toThrow(
        /must have required property 'filename'/,
      );
      expect(() => assertMatchesSchema('OpenAIFile', without(file, 'status'))).toThrow(/'status'/);
    });

    it('rejects a wrong type', () => {
      expect(() => assertMatchesSchema('OpenAIFile', { ...file, bytes: '120000' })).toThrow(/\/bytes: must be integer/);
      expect(() => assertMatchesSchema('OpenAIFile', { ...file, created_at: 1.5 })).toThrow(
        /\/created_at: must be integer/,
      );
      expect(() => assertMatchesSchema('OpenAIFile', { ...file, expires_at: null })).toThrow(/\/expires_at/);
      // The spec's OpenAIFile has no `type: object`; the helper adds it so non-objects cannot slip through.
      expect(() => assertMatchesSchema('OpenAIFile', 'file-abc123')).toThrow(/must be object/);
    });

    it('rejects an invalid enum value', () => {
      expect(() => assertMatchesSchema('OpenAIFile', { ...file, purpose: 'batch_input' })).toThrow(
        /\/purpose: must be equal to one of the allowed values/,
      );
      expect(() => assertMatchesSchema('OpenAIFile', { ...file, object: 'files' })).toThrow(/\/object/);
    });

    it('lists every violation, not just the first', () => {
      let message = '';
      try {
        assertMatchesSchema('OpenAIFile', { ...without(file, 'id'), bytes: 'x', status: 'done' });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/3 violation\(s\)/);
      expect(message).toMatch(/required property 'id'/);
      expect(message).toMatch(/\/bytes: must be integer/);
      expect(message).toMatch(/\/status: must be equal to one of the allowed values/);
    });

    it('checks list and delete envelopes', () => {
      const list = { object: 'list', data: [file], first_id: file.id, last_id: file.id, has_more: false };
      expect(() => assertMatchesSchema('ListFilesResponse', list)).not.toThrow();
      expect(() => assertMatchesSchema('ListFilesResponse', { ...list, data: [{ ...file, bytes: -0.5 }] })).toThrow(
        /\/data\/0\/bytes: must be integer/,
      );
      expect(() => assertMatchesSchema('ListFilesResponse', { ...list, first_id: null })).toThrow(/\/first_id/);
      expect(() =>
        assertMatchesSchema('DeleteFileResponse', { id: file.id, object: 'file', deleted: true }),
      ).not.toThrow();
      expect(() => assertMatchesSchema('DeleteFileResponse', { id: file.id, object: 'file', deleted: 'yes' })).toThrow(
        /\/deleted: must be boolean/,
      );
    });
  });

  describe('Batch', () => {
    it('accepts a batch with every field set', () => {
      expect(() => assertMatchesSchema('Batch', completedBatch)).not.toThrow();
    });

    it('accepts a fresh batch with only the required fields (plus null metadata)', () => {
      const fresh = {
        id: 'batch_abc123',
        object: 'batch',
        endpoint: '/v1/chat/completions',
        input_file_id: 'file-abc123',
        completion_window: '24h',
        status: 'validating',
        created_at: 1711471533,
        request_counts: { total: 0, completed: 0, failed: 0 },
        metadata: null,
      };
      expect(() => assertMatchesSchema('Batch', fresh)).not.toThrow();
      expect(() =>
        assertMatchesSchema('ListBatchesResponse', { object: 'list', data: [fresh, completedBatch], has_more: false }),
      ).not.toThrow();
    });

    it('rejects an unknown status', () => {
      expect(() => assertMatchesSchema('Batch', { ...completedBatch, status: 'bogus' })).toThrow(
        /\/status: must be equal to one of the allowed values/,
      );
    });

    it('rejects nulls the spec does not allow and incomplete nested objects', () => {
      expect(() => assertMatchesSchema('Batch', { ...completedBatch, output_file_id: null })).toThrow(
        /\/output_file_id: must be string/,
      );
      expect(() => assertMatchesSchema('Batch', { ...completedBatch, failed_at: null })).toThrow(
        /\/failed_at: must be integer/,
      );
      expect(() => assertMatchesSchema('Batch', { ...completedBatch, errors: null })).toThrow(
        /\/errors: must be object/,
      );
      expect(() =>
        assertMatchesSchema('Batch', { ...completedBatch, request_counts: { total: 1, completed: 1 } }),
      ).toThrow(/\/request_counts: must have required property 'failed'/);
      expect(() =>
        assertMatchesSchema('Batch', {
          ...completedBatch,
          usage: { ...completedBatch.usage, output_tokens_details: {} },
        }),
      ).toThrow(/\/usage\/output_tokens_details: must have required property 'reasoning_tokens'/);
      expect(() => assertMatchesSchema('Batch', without(completedBatch, 'completion_window'))).toThrow(
        /required property 'completion_window'/,
      );
      expect(() => assertMatchesSchema('Batch', { ...completedBatch, metadata: { n: 1 } })).toThrow(/\/metadata/);
      expect(() =>
        assertMatchesSchema('ListBatchesResponse', {
          object: 'list',
          data: [{ ...completedBatch, status: 'bogus' }],
          has_more: false,
        }),
      ).toThrow(/\/data\/0\/status/);
    });
  });

  describe('errors', () => {
    it('accepts the OpenAI error envelope', () => {
      const envelope = {
        error: { message: 'No such batch: batch_x', type: 'invalid_request_error', param: null, code: null },
      };
      expect(() => assertMatchesSchema('ErrorResponse', envelope)).not.toThrow();
      expect(() =>
        assertMatchesSchema('ErrorResponse', {
          error: { message: 'bad', type: 'invalid_request_error', param: 'endpoint', code: 'invalid_value' },
        }),
      ).not.toThrow();
    });

    it('rejects an envelope missing the nullable-but-required param/code, or with wrong types', () => {
      expect(() => assertMatchesSchema('ErrorResponse', { error: { message: 'x', type: 'server_error' } })).toThrow(
        /\/error: must have required property 'param'/,
      );
      expect(() =>
        assertMatchesSchema('ErrorResponse', { error: { message: 'x', type: 'server_error', param: null, code: 500 } }),
      ).toThrow(/\/error\/code/);
      expect(() => assertMatchesSchema('ErrorResponse', { message: 'x' })).toThrow(/required property 'error'/);
    });
  });

  describe('batch file lines (batch-lines.yaml)', () => {
    it('accepts output and error lines', () => {
      const ok = {
        id: 'batch_req_1',
        custom_id: 'request-1',
        response: { status_code: 200, request_id: 'req_1', body: { id: 'chatcmpl-1', object: 'chat.completion' } },
        error: null,
      };
      const failed = {
        id: 'batch_req_2',
        custom_id: 'request-2',
        response: null,
        error: { code: 'timeout', message: 'took too long' },
      };
      expect(() => assertMatchesSchema('BatchRequestOutput', ok)).not.toThrow();
      expect(() => assertMatchesSchema('BatchRequestOutput', failed)).not.toThrow();
      expect(() =>
        assertMatchesSchema('BatchRequestInput', {
          custom_id: 'r1',
          method: 'POST',
          url: '/v1/chat/completions',
          body: {},
        }),
      ).not.toThrow();
    });

    it('rejects wrong types inside lines', () => {
      expect(() =>
        assertMatchesSchema('BatchRequestOutput', {
          id: 'b',
          custom_id: 'c',
          response: { status_code: '200', body: {} },
          error: null,
        }),
      ).toThrow(/\/response\/status_code: must be integer/);
      expect(() =>
        assertMatchesSchema('BatchRequestOutput', { id: 'b', custom_id: 'c', response: null, error: 'boom' }),
      ).toThrow(/\/error: must be object,null/);
      expect(() =>
        assertMatchesSchema('BatchRequestInput', { custom_id: 'r1', method: 'GET', url: '/v1/embeddings' }),
      ).toThrow(/\/method/);
    });

    it('documents that the line schemas require no keys at all (check presence yourself)', () => {
      expect(() => assertMatchesSchema('BatchRequestOutput', {})).not.toThrow();
      expect(() => assertMatchesSchema('BatchRequestInput', {})).not.toThrow();
    });
  });

  describe('OpenAPI-dialect handling', () => {
    it('treats `nullable: true` as "or null" without becoming lenient', () => {
      // CreateCompletionRequest.suffix is `type: string, nullable: true`; prompt is `oneOf` + `nullable: true`.
      const req = { model: 'm', prompt: 'hi', suffix: null };
      expect(() => assertMatchesSchema('CreateCompletionRequest', req)).not.toThrow();
      expect(() => assertMatchesSchema('CreateCompletionRequest', { ...req, prompt: null })).not.toThrow();
      expect(() => assertMatchesSchema('CreateCompletionRequest', { ...req, suffix: 5 })).toThrow(
        /\/suffix: must be string,null/,
      );
      expect(() => assertMatchesSchema('CreateCompletionRequest', { ...req, prompt: 5 })).toThrow(/\/prompt/);
    });

    it('validates a chat completion response', () => {
      const chat = {
        id: 'chatcmpl-1',
        object: 'chat.completion',
        created: 1711475054,
        model: 'llama',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: '4', refusal: null },
            finish_reason: 'stop',
            logprobs: null,
          },
        ],
        usage: { prompt_tokens: 24, completion_tokens: 1, total_tokens: 25 },
      };
      expect(() => assertMatchesSchema('CreateChatCompletionResponse', chat)).not.toThrow();
      // system_fingerprint is `type: string` (not nullable) in this spec.
      expect(() => assertMatchesSchema('CreateChatCompletionResponse', { ...chat, system_fingerprint: null })).toThrow(
        /\/system_fingerprint: must be string/,
      );
      expect(() =>
        assertMatchesSchema('CreateChatCompletionResponse', {
          ...chat,
          choices: [{ ...chat.choices[0], finish_reason: 'eos' }],
        }),
      ).toThrow(/\/choices\/0\/finish_reason/);
    });
  });
});
