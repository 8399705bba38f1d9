import { describe, expect, it } from 'vitest';
import { fineTuningLine, inputOf, inputText, viewResult } from '../../src/domain/result-view.js';
import { errorOnlyLine, responseLine } from '../../src/domain/result-line.js';

const line = (body: unknown) => JSON.stringify({ custom_id: 'x', method: 'POST', url: '/v1/chat/completions', body });

describe('inputOf', () => {
  it('reads messages, prompts and embedding inputs, and null for anything else', () => {
    expect(inputOf(line({ messages: [{ role: 'user', content: 'hi' }] }))).toEqual([{ role: 'user', content: 'hi' }]);
    expect(inputOf(line({ prompt: 'once upon' }))).toBe('once upon');
    expect(inputOf(line({ input: ['a', 'b'] }))).toEqual(['a', 'b']);
    expect(inputOf(line({ model: 'm' }))).toBeNull();
    expect(inputOf('not json')).toBeNull();
    expect(inputOf(null)).toBeNull();
  });

  it('makes multimodal content searchable by its text parts', () => {
    const input = inputOf(
      line({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'what is this' },
              { type: 'image_url', image_url: { url: 'data:' } },
            ],
          },
        ],
      }),
    );
    expect(inputText(input)).toBe('what is this [image_url]');
  });
});

describe('viewResult', () => {
  it('reads a chat answer, its finish reason and usage', () => {
    const body = JSON.stringify({
      choices: [{ message: { role: 'assistant', content: 'hello' }, finish_reason: 'length' }],
      usage: { prompt_tokens: 3, completion_tokens: 5 },
    });
    expect(viewResult(responseLine('x', 200, 'req_1', body))).toEqual({
      output: 'hello',
      finishReason: 'length',
      usage: { prompt_tokens: 3, completion_tokens: 5 },
      error: null,
    });
  });

  it('reads completions text and summarises embeddings', () => {
    expect(
      viewResult(responseLine('x', 200, 'r', JSON.stringify({ choices: [{ text: 'abc', finish_reason: 'stop' }] })))
        .output,
    ).toBe('abc');
    const emb = viewResult(
      responseLine(
        'x',
        200,
        'r',
        JSON.stringify({ data: [{ embedding: [1, 2, 3] }, { embedding: [4, 5, 6] }], usage: { prompt_tokens: 4 } }),
      ),
    );
    expect(emb.output).toBe('2 embeddings × 3 dims');
    expect(emb.usage).toEqual({ prompt_tokens: 4, completion_tokens: 0 });
  });

  it('reads errors: an engine 4xx, and a request that never got an answer', () => {
    const e400 = viewResult(
      responseLine('x', 400, 'r', JSON.stringify({ error: { message: 'too long', code: 'context_length_exceeded' } })),
    );
    expect(e400).toMatchObject({ output: null, error: { code: 'context_length_exceeded', message: 'too long' } });
    expect(viewResult(errorOnlyLine('x', 'batch_cancelled', 'cancelled')).error).toEqual({
      code: 'batch_cancelled',
      message: 'cancelled',
    });
    expect(viewResult(null)).toEqual({ output: null, finishReason: null, usage: null, error: null });
  });
});

describe('fineTuningLine', () => {
  it('appends the answer to the messages as the assistant turn', () => {
    const msgs = [
      { role: 'system', content: 's' },
      { role: 'user', content: 'q' },
    ];
    expect(JSON.parse(fineTuningLine(msgs, 'a', '/v1/chat/completions')!)).toEqual({
      messages: [...msgs, { role: 'assistant', content: 'a' }],
    });
  });

  it('turns a completions prompt into one user message and skips what has nothing to learn from', () => {
    expect(JSON.parse(fineTuningLine('p', 'a', '/v1/completions')!).messages).toEqual([
      { role: 'user', content: 'p' },
      { role: 'assistant', content: 'a' },
    ]);
    expect(fineTuningLine(['x'], '1 embedding × 3 dims', '/v1/embeddings')).toBeNull();
    expect(fineTuningLine(null, 'a', '/v1/chat/completions')).toBeNull();
    expect(fineTuningLine([{ role: 'user', content: 'q' }], null, '/v1/chat/completions')).toBeNull();
  });
});
