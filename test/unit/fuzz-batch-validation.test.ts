/**
 * Property-based fuzzing of batch input validation: validateLine (pure) and validateBatchFile
 * on generated files that mix valid lines with every kind of broken one (bad JSON, wrong
 * types, missing fields, duplicate custom_ids, wrong url, mismatched model, blank lines, CRLF,
 * a BOM, invalid UTF-8, over-long lines, huge numbers, unicode). Every bad line must be
 * reported with its own line number and the right code; valid files must validate, with
 * offsets that read back each line; nothing ever throws.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, validateLine } from '../../src/domain/batch-line.js';
import { validateBatchFile, type ValidationLimits } from '../../src/control/validate-batch.js';
import {
  deepJson,
  EXPECTED_CODES,
  fuzzRuns,
  hostileJson,
  lineArb,
  nastyString,
  type GenLine,
} from '../helpers/arbitraries.js';

const dir = mkdtempSync(path.join(tmpdir(), 'bw-fuzz-val-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MODEL = 'm-main';
const OTHER = 'm-other';
const KNOWN = new Set([MODEL, OTHER]);
const ENDPOINTS = ['/v1/chat/completions', '/v1/embeddings', '/v1/completions'] as const;
const MAX_LINE = 64 * 1024;
const limits: ValidationLimits = {
  maxRequests: 100_000,
  maxBytes: 1 << 30,
  maxLineBytes: MAX_LINE,
  maxErrors: 100_000,
  maxEmbeddingInputs: 1e9,
};

/** Line-level codes the validator may emit (docs/errors.md, validation table). */
const LINE_CODES = new Set([
  'invalid_json_line',
  'missing_custom_id',
  'invalid_custom_id',
  'invalid_method',
  'invalid_url',
  'invalid_body',
  'missing_model',
]);

let fileNo = 0;
function writeFile(parts: Buffer[]): string {
  const p = path.join(dir, `f${fileNo++}.jsonl`);
  writeFileSync(p, Buffer.concat(parts));
  return p;
}

describe('validateLine', () => {
  it('never throws, and reports errors with the given line number and a known code', () => {
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      hostileJson.map((v) => JSON.stringify(v) ?? ''),
      fc
        .record(
          { custom_id: hostileJson, method: hostileJson, url: hostileJson, body: hostileJson },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
      nastyString,
    );
    fc.assert(
      fc.property(text, fc.integer({ min: 1, max: 1e9 }), fc.constantFrom(...ENDPOINTS), (t, line, endpoint) => {
        const r = validateLine(t, line, endpoint);
        if (Array.isArray(r)) {
          expect(r.length).toBeGreaterThan(0);
          for (const e of r) {
            expect(e.line).toBe(line);
            expect(LINE_CODES.has(e.code)).toBe(true);
            expect(e.message).toContain(`Line ${line}`);
          }
        } else {
          expect(typeof r.customId).toBe('string');
          expect(typeof r.model).toBe('string');
        }
      }),
      { numRuns: fuzzRuns(4000) },
    );
  }, 120_000);

  it('refuses lines nested deeper than MAX_JSON_DEPTH (100k levels: no stack overflow), accepts MAX_JSON_DEPTH', () => {
    const wrap = (inner: string) =>
      `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","x":${inner}}}`;
    for (const deep of [deepJson(100_000), deepJson(100_000, 'object'), deepJson(MAX_JSON_DEPTH)]) {
      const r = validateLine(wrap(deep), 7, '/v1/chat/completions');
      expect(Array.isArray(r) && r[0]!.code).toBe('invalid_json_line');
      expect(Array.isArray(r) && r[0]!.message).toMatch(/levels deep/);
    }
    // The line itself is 2 levels, body.x adds MAX_JSON_DEPTH - 2: exactly the limit.
    expect(Array.isArray(validateLine(wrap(deepJson(MAX_JSON_DEPTH - 2)), 1, '/v1/chat/completions'))).toBe(false);
  });

  it('explains a byte order mark in the middle of a file', () => {
    const r = validateLine('\ufeff{"custom_id":"a"}', 3, '/v1/chat/completions');
    expect(Array.isArray(r) && r[0]!.message).toMatch(/byte order mark/);
  });
});

interface Planned {
  bytes: Buffer;
  kind: GenLine['kind'] | 'invalid_utf8' | 'too_long';
  registers?: string;
  model?: string;
}

const INVALID_UTF8 = [
  Buffer.from([0xff]),
  Buffer.from([0xc3]),
  Buffer.from([0xed, 0xa0, 0x80]),
  Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]),
  Buffer.from([0xe2, 0x82]),
];

/** A file plan: per slot either a generated JSONL line, an invalid-UTF-8 line or an over-long line. */
const filePlan = fc.constantFrom(...ENDPOINTS).chain((endpoint) =>
  fc.record({
    endpoint: fc.constant(endpoint),
    slots: fc.array(
      fc.oneof(
        { weight: 12, arbitrary: lineArb(endpoint, MODEL, OTHER).map((f) => ({ gen: f })) },
        {
          weight: 1,
          arbitrary: fc.tuple(fc.constantFrom(...INVALID_UTF8), fc.nat(40)).map(([bad, at]) => ({ utf8: { bad, at } })),
        },
        { weight: 1, arbitrary: fc.integer({ min: MAX_LINE + 1, max: MAX_LINE * 3 }).map((n) => ({ long: n })) },
      ),
      { maxLength: 40 },
    ),
    bom: fc.boolean(),
    trailingNewline: fc.boolean(),
  }),
);

type Slot =
  { gen: (uid: string, prev: string[]) => GenLine } | { utf8: { bad: Buffer; at: number } } | { long: number };

function materialise(plan: { endpoint: string; slots: Slot[] }): Planned[] {
  const prev: string[] = [];
  return plan.slots.map((slot, i) => {
    if ('gen' in slot) {
      const g = slot.gen(`L${i}-`, prev);
      const bytes = Buffer.from(g.text);
      // An over-long line is never parsed, so its custom_id is not taken.
      if (g.registers !== undefined && bytes.length <= MAX_LINE) prev.push(g.registers);
      return { bytes, kind: g.kind, registers: g.registers, model: g.model };
    }
    if ('utf8' in slot) {
      const text = Buffer.from(
        JSON.stringify({
          custom_id: `L${i}-`,
          method: 'POST',
          url: plan.endpoint,
          body: { model: MODEL, messages: [{ role: 'user', content: 'héllo wörld' }] },
        }),
      );
      const at = Math.min(slot.utf8.at, text.length - 2) + 1;
      return { bytes: Buffer.concat([text.subarray(0, at), slot.utf8.bad, text.subarray(at)]), kind: 'invalid_utf8' };
    }
    return {
      bytes: Buffer.from(
        JSON.stringify({
          custom_id: `L${i}-`,
          method: 'POST',
          url: plan.endpoint,
          body: { model: MODEL, pad: 'p'.repeat(slot.long) },
        }),
      ),
      kind: 'too_long',
    };
  });
}

describe('validateBatchFile', () => {
  it('reports every bad line with its line number and code; never throws', async () => {
    let files = 0;
    let badLines = 0;
    await fc.assert(
      fc.asyncProperty(filePlan, async (plan) => {
        const lines = materialise(plan);
        const parts: Buffer[] = plan.bom ? [Buffer.from([0xef, 0xbb, 0xbf])] : [];
        lines.forEach((l, i) =>
          parts.push(l.bytes, Buffer.from(i < lines.length - 1 || plan.trailingNewline ? '\n' : '')),
        );
        const file = writeFile(parts);
        const result = await validateBatchFile(
          file,
          readFileSync(file).length,
          plan.endpoint,
          KNOWN,
          limits,
          () => false,
        );
        files += 1;

        // The expected verdict of each line, as the validator defines it.
        const expected = new Map<number, string[]>();
        let batchModel: string | undefined;
        let nonBlank = 0;
        const goodLines: number[] = [];
        lines.forEach((l, i) => {
          const lineNo = i + 1;
          if (l.kind === 'blank') return;
          nonBlank += 1;
          if (l.bytes.length > MAX_LINE) return void expected.set(lineNo, ['line_too_long']);
          if (l.kind === 'invalid_utf8') return void expected.set(lineNo, ['invalid_utf8']);
          if (l.kind === 'valid' || l.kind === 'mismatched_model') {
            batchModel ??= l.model;
            if (l.model !== batchModel) expected.set(lineNo, ['mismatched_model']);
            else goodLines.push(lineNo);
            return;
          }
          expected.set(lineNo, EXPECTED_CODES[l.kind as keyof typeof EXPECTED_CODES]);
        });
        badLines += expected.size;

        if (nonBlank === 0) {
          expect(result.ok).toBe(false);
          expect(!result.ok && 'errors' in result && result.errors.map((e) => e.code)).toEqual(['empty_file']);
          return;
        }
        if (expected.size === 0) {
          expect(result.ok, JSON.stringify(!result.ok && 'errors' in result ? result.errors.slice(0, 3) : null)).toBe(
            true,
          );
          if (!result.ok) return;
          expect(result.model).toBe(batchModel);
          expect(result.requests.map((r) => r.line)).toEqual(goodLines);
          // Offsets read back exactly the line's JSON (after a BOM, without the CR).
          const bytes = readFileSync(file);
          for (const r of result.requests) {
            const line = JSON.parse(bytes.toString('utf8', r.offset, r.offset + r.length)) as { custom_id: string };
            expect(line.custom_id).toBe(r.customId);
          }
          return;
        }
        expect(result.ok).toBe(false);
        if (result.ok || !('errors' in result)) return;
        const byLine = new Map<number, string[]>();
        for (const e of result.errors) {
          expect(e.line, JSON.stringify(e)).not.toBeNull();
          expect(typeof e.message === 'string' && e.message.length > 0).toBe(true);
          byLine.set(e.line!, [...(byLine.get(e.line!) ?? []), e.code]);
        }
        // Exactly the bad lines are reported, each with (one of) its expected code(s).
        expect([...byLine.keys()].sort((a, b) => a - b)).toEqual([...expected.keys()].sort((a, b) => a - b));
        for (const [line, codes] of expected)
          expect(
            byLine.get(line)!.some((c) => codes.includes(c)),
            `line ${line}: got ${String(byLine.get(line))} want ${String(codes)}`,
          ).toBe(true);
      }),
      { numRuns: fuzzRuns(600) },
    );
    expect(files).toBeGreaterThan(0);
    expect(badLines).toBeGreaterThan(0);
  }, 180_000);

  it('validates files of only valid lines (CRLF, BOM, unicode, huge numbers)', async () => {
    const valid = fc.record({
      ids: fc.uniqueArray(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }), {
        minLength: 1,
        maxLength: 30,
      }),
      crlf: fc.boolean(),
      bom: fc.boolean(),
      num: fc.constantFrom('1e308', '1e999', '-0', '123456789012345678901234567890', '5e-324', '0.1'),
    });
    await fc.assert(
      fc.asyncProperty(valid, async ({ ids, crlf, bom, num }) => {
        const text = ids
          .map(
            (id) =>
              `{"custom_id":${JSON.stringify(id)},"method":"POST","url":"/v1/chat/completions","body":{"model":"${MODEL}","max_tokens":${num},"messages":[{"role":"user","content":"ü💥\\u0000"}]}}`,
          )
          .join(crlf ? '\r\n' : '\n');
        const file = writeFile([Buffer.from(bom ? '\ufeff' : ''), Buffer.from(text)]);
        const r = await validateBatchFile(
          file,
          readFileSync(file).length,
          '/v1/chat/completions',
          KNOWN,
          limits,
          () => false,
        );
        expect(r.ok).toBe(true);
        expect(r.ok && r.requests.map((q) => q.customId)).toEqual(ids);
      }),
      { numRuns: fuzzRuns(500) },
    );
  }, 120_000);

  it('reports invalid UTF-8 with its line number, and a 10 MB line in bounded memory', async () => {
    const ok = `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"${MODEL}"}}`;
    const bad = Buffer.concat([
      Buffer.from('{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}}'),
    ]);
    const huge = Buffer.alloc(10 * 1024 * 1024 + 7, 0x61);
    const file = writeFile([
      Buffer.from(ok + '\n'),
      bad,
      Buffer.from('\n'),
      huge,
      Buffer.from('\n' + ok.replace('"a"', '"c"') + '\n'),
    ]);
    const before = process.memoryUsage().rss;
    const r = await validateBatchFile(
      file,
      readFileSync(file).length,
      '/v1/chat/completions',
      KNOWN,
      { ...limits, maxLineBytes: 1024 * 1024 },
      () => false,
    );
    expect(r.ok).toBe(false);
    const errors = !r.ok && 'errors' in r ? r.errors : [];
    expect(errors.map((e) => [e.line, e.code])).toEqual([
      [2, 'invalid_utf8'],
      [3, 'line_too_long'],
    ]);
    expect(errors[1]!.message).toMatch(/Line 3 is 10485767 bytes; a line may have at most 1048576/);
    // The reader never buffers the long line: growth stays well under its size (loose bound: GC noise).
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
  });
});
