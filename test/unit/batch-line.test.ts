import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateLine } from '../../src/domain/batch-line.js';
import { canTransition, BATCH_STATUSES, TERMINAL_STATUSES } from '../../src/domain/batch-status.js';
import { readLines } from '../../src/store/line-reader.js';

const EP = '/v1/chat/completions';

describe('validateLine', () => {
  it('accepts a well-formed line and reports its custom_id and model', () => {
    expect(
      validateLine(JSON.stringify({ custom_id: 'x', method: 'POST', url: EP, body: { model: 'm' } }), 1, EP),
    ).toEqual({ customId: 'x', model: 'm', embeddingInputs: 0 });
  });

  it('reports every problem of one line with its line number', () => {
    const errs = validateLine(JSON.stringify({ method: 'GET', url: '/v1/embeddings', body: 3 }), 7, EP);
    expect(Array.isArray(errs) && errs.map((e) => [e.code, e.line])).toEqual([
      ['missing_custom_id', 7],
      ['invalid_method', 7],
      ['invalid_url', 7],
      ['invalid_body', 7],
    ]);
  });

  it('refuses stream: true in a batch', () => {
    const errs = validateLine(
      JSON.stringify({ custom_id: 'x', method: 'POST', url: EP, body: { model: 'm', stream: true } }),
      1,
      EP,
    );
    expect(Array.isArray(errs) && errs[0]!.param).toBe('body.stream');
  });

  it('counts embedding inputs (a token array is one input)', () => {
    const line = (input: unknown) =>
      validateLine(
        JSON.stringify({ custom_id: 'x', method: 'POST', url: '/v1/embeddings', body: { model: 'm', input } }),
        1,
        '/v1/embeddings',
      );
    expect(line('a')).toMatchObject({ embeddingInputs: 1 });
    expect(line(['a', 'b', 'c'])).toMatchObject({ embeddingInputs: 3 });
    expect(line([1, 2, 3])).toMatchObject({ embeddingInputs: 1 });
  });

  it('never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (text) => {
        const r = validateLine(text, 1, EP);
        if (Array.isArray(r)) expect(r.length).toBeGreaterThan(0);
        else expect(typeof r.customId).toBe('string');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('readLines', () => {
  const file = (content: Buffer | string) => {
    const p = path.join(mkdtempSync(path.join(tmpdir(), 'bw-lines-')), 'f.jsonl');
    writeFileSync(p, content);
    return p;
  };
  const collect = async (p: string, max = 1 << 20) => {
    const out = [];
    for await (const l of readLines(p, max)) out.push(l);
    return out;
  };

  it('gives byte offsets that slice each line back out of the file, across CRLF and blank lines', async () => {
    const text = 'first\r\n\n  \nsecond ü\nthird';
    const lines = await collect(file(text));
    const buf = Buffer.from(text);
    expect(lines.map((l) => [l.line, l.text])).toEqual([
      [1, 'first'],
      [4, 'second ü'],
      [5, 'third'],
    ]);
    for (const l of lines) expect(buf.subarray(l.offset, l.offset + l.length).toString()).toBe(l.text);
  });

  it('reports lines that are too long or not UTF-8 without buffering them', async () => {
    const p = file(
      Buffer.concat([
        Buffer.from('ok\n'),
        Buffer.from('x'.repeat(100)),
        Buffer.from('\n'),
        Buffer.from([0xff, 0xfe, 0x0a]),
        Buffer.from('end\n'),
      ]),
    );
    const lines = await collect(p, 50);
    expect(lines.map((l) => [l.line, l.problem])).toEqual([
      [1, null],
      [2, 'too_long'],
      [3, 'invalid_utf8'],
      [4, null],
    ]);
  });

  it('splits any file into the same lines as String.split, whatever the chunking', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc
            .string({ unit: 'grapheme', maxLength: 30 })
            .filter((s) => !s.includes('\n') && !s.includes('\r') && s.trim() !== ''),
          { maxLength: 30 },
        ),
        async (rows) => {
          const lines = await collect(file(rows.join('\n')));
          expect(lines.map((l) => l.text)).toEqual(rows);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('batch status machine', () => {
  it('has no way out of a terminal status and reaches every status from validating', () => {
    for (const t of TERMINAL_STATUSES) for (const s of BATCH_STATUSES) expect(canTransition(t, s)).toBe(false);
    expect(canTransition('validating', 'in_progress')).toBe(true);
    expect(canTransition('in_progress', 'finalizing')).toBe(true);
    expect(canTransition('cancelling', 'cancelled')).toBe(true);
    expect(canTransition('completed', 'cancelling')).toBe(false);
  });
});
