/**
 * fast-check arbitraries for hostile input: strings, JSON values, query strings, headers and
 * batch JSONL lines. Used by test/unit/fuzz-*.test.ts and test/integration/hostile-*.test.ts.
 *
 * Case counts: each property reads its run count from fuzzRuns(n), so FUZZ_RUNS_SCALE=10 turns
 * a CI run into a long soak without editing the tests.
 */
import fc from 'fast-check';

/** `n` scaled by FUZZ_RUNS_SCALE (default 1). */
export function fuzzRuns(n: number): number {
  const scale = Number(process.env.FUZZ_RUNS_SCALE ?? 1);
  return Math.max(1, Math.round(n * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}

/** Keys that have broken JS servers before: prototype pollution and friends. */
export const PROTO_KEYS = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'valueOf',
  '__defineGetter__',
];

/** Strings chosen to break parsers, logs, paths and headers. */
export const NASTY_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\r\n',
  '\n\nX-Injected: 1',
  '"',
  "'",
  '\\',
  '%00',
  '%2e%2e%2f',
  '../../etc/passwd',
  '..\\..\\windows',
  '/etc/passwd',
  'C:\\Windows\\system.ini',
  '\u202e\u2066evil',
  '\ufeff',
  '\ud800',
  '\udfff\ud800',
  '💥'.repeat(40),
  'NaN',
  'Infinity',
  '-Infinity',
  '1e309',
  '-0',
  '0x10',
  '9'.repeat(400),
  'null',
  'undefined',
  'true',
  '[]',
  '{}',
  '<script>alert(1)</script>',
  "' OR 1=1 --",
  '${jndi:ldap://x}',
  '{{7*7}}',
  '__proto__',
  'constructor',
  'file-AAAAAAAAAAAAAAAAAAAAAAAA',
  'batch_AAAAAAAAAAAAAAAAAAAAAAAA',
  'x'.repeat(5000),
];

export const nastyString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 200_000 }).map((n) => 'y'.repeat(n)) },
);

/** Numbers JSON can carry that break naive checks (and strings that look like numbers). */
export const nastyNumber: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(0, -0, -1, 1.5, 2 ** 31, 2 ** 53 + 1, Number.MAX_SAFE_INTEGER, Number.MIN_VALUE, 1e308, -1e308),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer(),
  fc.constantFrom('1', '1e3', '0x10', 'NaN', '-Infinity', ' 5 ', '5abc'),
);

/** Any JSON value, with a bias towards hostile leaves and keys. */
export const hostileJson: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyString,
    nastyNumber,
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 5 }),
    tie('object'),
  ),
  object: fc
    .array(
      fc.tuple(
        fc.oneof(
          fc.constantFrom(...PROTO_KEYS),
          nastyString.filter((s) => s.length < 100),
        ),
        tie('value'),
      ),
      { maxLength: 6 },
    )
    .map(objectOf),
})).value;

/** Builds an object with own properties even for "__proto__" (as JSON.parse does). */
export function objectOf(entries: readonly (readonly [string, unknown])[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries)
    Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
}

/** `depth` levels of nesting as raw JSON text ([[[...]]] or {"a":{"a":...}}), built without recursion. */
export function deepJson(depth: number, kind: 'array' | 'object' = 'array'): string {
  return kind === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

/** A JSON body as the bytes a hostile client sends: valid JSON of hostile values, or broken text. */
export const hostileBodyText: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: hostileJson.map((v) => JSON.stringify(v) ?? 'null') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 3000 }).chain((d) => fc.constantFrom(deepJson(d), deepJson(d, 'object'))),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom('{', '{"a":', '[1,2', '{"model":"x",}', 'NaN', '\ufeff{}', '{"a":1}{"b":2}', ''),
  },
);

/** encodeURIComponent, except that a lone surrogate becomes the (invalid UTF-8) bytes %ED%xx%xx instead of throwing. */
export function encodeHostile(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c >= 0xd800 && c <= 0xdfff)
      out += `%ED%${(0x80 | ((c >> 6) & 0x3f)).toString(16).toUpperCase()}%${(0x80 | (c & 0x3f)).toString(16).toUpperCase()}`;
    else out += encodeURIComponent(ch);
  }
  return out;
}

/** A query string with hostile names, values, repeats and encodings. */
export const hostileQuery: fc.Arbitrary<string> = fc
  .array(
    fc.tuple(
      fc.oneof(
        fc.constantFrom('limit', 'after', 'order', 'purpose', ...PROTO_KEYS, 'limit[]', 'a[b][c]'),
        nastyString.filter((s) => s.length < 50),
      ),
      fc.oneof(
        nastyString.filter((s) => s.length < 300),
        nastyNumber.map(String),
      ),
      fc.boolean(),
    ),
    { maxLength: 5 },
  )
  .map((pairs) =>
    pairs
      .map(([k, v, raw]) =>
        raw
          ? `${k}=${v}`.replace(/[#\s]/g, '').replace(/[^\x21-\x7e]/g, (c) => encodeHostile(c))
          : `${encodeHostile(k)}=${encodeHostile(v)}`,
      )
      .join('&'),
  );

/** A path segment: ids, traversal, encodings, very long. Always URL-safe once encoded. */
export const hostilePathParam: fc.Arbitrary<string> = fc.oneof(
  nastyString.filter((s) => s.length > 0 && s.length < 2000).map(encodeHostile),
  fc.constantFrom(
    '%2e%2e%2f%2e%2e',
    '..%2f..%2fetc',
    '%00',
    '%ff%fe',
    '%',
    '%zz',
    'file-' + 'A'.repeat(70),
    'batch_' + 'A'.repeat(70),
    'a'.repeat(600),
  ),
);

const headerValue = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    'Bearer',
    'Bearer ',
    'Bearer sk-' + 'x'.repeat(300),
    'application/json; charset=utf-16',
    'multipart/form-data',
    'multipart/form-data; boundary=',
    'text/plain',
    '-1',
    '1e9',
    'NaN',
    '9'.repeat(30),
  ),
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 200 }),
);

/** Headers a hostile client sends (values limited to what HTTP can carry). */
export const hostileHeaders: fc.Arbitrary<Record<string, string>> = fc
  .array(
    fc.tuple(
      fc.constantFrom(
        'x-request-id',
        'idempotency-key',
        'x-stainless-retry-count',
        'authorization',
        'x-api-key',
        'accept',
        'accept-encoding',
        'openai-organization',
        'openai-project',
        'x-forwarded-for',
        'range',
      ),
      headerValue,
    ),
    { maxLength: 4 },
  )
  .map((pairs) => Object.fromEntries(pairs));

// ---------------------------------------------------------------------------------------------
// Batch JSONL lines with the validator's expected verdict.

export type LineKind =
  | 'valid'
  | 'blank'
  | 'bad_json'
  | 'not_object'
  | 'missing_custom_id'
  | 'bad_method'
  | 'bad_url'
  | 'bad_body'
  | 'missing_model'
  | 'stream_true'
  | 'duplicate'
  | 'unknown_model'
  | 'mismatched_model'
  | 'long_custom_id';

export interface GenLine {
  kind: LineKind;
  text: string;
  /** The custom_id this line puts in the validator's seen-set (lines that pass the per-line checks). */
  registers?: string;
  /** The body.model of a line that passes the per-line checks. */
  model?: string;
}

/** Codes validateBatchFile must report for a line of each kind (any one of them). */
export const EXPECTED_CODES: Record<Exclude<LineKind, 'valid' | 'blank'>, string[]> = {
  bad_json: ['invalid_json_line'],
  not_object: ['invalid_json_line'],
  missing_custom_id: ['missing_custom_id'],
  bad_method: ['invalid_method'],
  bad_url: ['invalid_url'],
  bad_body: ['invalid_body'],
  missing_model: ['missing_model'],
  stream_true: ['invalid_body'],
  duplicate: ['duplicate_custom_id'],
  unknown_model: ['model_not_found'],
  mismatched_model: ['mismatched_model'],
  long_custom_id: ['invalid_custom_id'],
};

const bodyExtras = fc.dictionary(
  fc.constantFrom(
    'messages',
    'max_tokens',
    'temperature',
    'seed',
    'n',
    'stop',
    'metadata',
    'input',
    'prompt',
    'x_extra',
  ),
  hostileJson,
  { maxKeys: 3 },
);

/**
 * A generator of lines for one endpoint and a known `model`, `other` a second known model.
 * Custom ids are made unique by the caller (`uid`), except for 'duplicate' lines.
 */
export function lineArb(
  endpoint: string,
  model: string,
  other: string,
): fc.Arbitrary<(uid: string, prevIds: string[]) => GenLine> {
  const ws = fc.constantFrom('', ' ', '\t', '  ');
  const eol = fc.constantFrom('', '\r');
  const unicodeId = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 });
  // `...m`, not a default parameter: an explicit undefined model must stay undefined.
  const req = (customId: unknown, extra: Record<string, unknown>, ...m: unknown[]) =>
    objectOf([
      ['custom_id', customId],
      ['method', 'POST'],
      ['url', endpoint],
      ['body', objectOf([['model', m.length > 0 ? m[0] : model], ...Object.entries(extra)])],
    ]);
  const encode = (v: unknown, pad: string, cr: string) => `${pad}${JSON.stringify(v)}${pad}${cr}`;
  return fc.oneof(
    {
      weight: 8,
      arbitrary: fc
        .tuple(
          bodyExtras.map((e) => ({ ...e, stream: false })),
          unicodeId,
          ws,
          eol,
        )
        .map(([extra, idTail, pad, cr]) => (uid: string) => ({
          kind: 'valid' as const,
          text: encode(req(`${uid}${idTail}`, extra), pad, cr),
          registers: `${uid}${idTail}`,
          model,
        })),
    },
    { weight: 1, arbitrary: fc.tuple(ws, eol).map(([pad, cr]) => () => ({ kind: 'blank' as const, text: pad + cr })) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(
          '{',
          '{"custom_id":',
          'not json',
          '{"a":1,}',
          "{'custom_id':'x'}",
          '{"custom_id":"x"} trailing',
          'NaN',
          '[',
          '{"a":"\\x"}',
          '\u0000',
        )
        .map((t) => () => ({ kind: 'bad_json' as const, text: t })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom('[]', '1', '"str"', 'null', 'true', '[{"custom_id":"a"}]', '1e999')
        .map((t) => () => ({ kind: 'not_object' as const, text: t })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(undefined, null, 1, '', [], {}, true)
        .map((cid) => () => ({ kind: 'missing_custom_id' as const, text: JSON.stringify(req(cid, {})) })),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom('GET', 'post', 'PUT', null, 1).map((m) => (uid: string) => ({
        kind: 'bad_method' as const,
        text: JSON.stringify({ ...req(uid, {}), method: m }),
      })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom('/v1/other', endpoint + '/', endpoint.toUpperCase(), null, 42, 'http://evil' + endpoint)
        .map((u) => (uid: string) => ({ kind: 'bad_url' as const, text: JSON.stringify({ ...req(uid, {}), url: u }) })),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(null, 'x', [], 5).map((b) => (uid: string) => ({
        kind: 'bad_body' as const,
        text: JSON.stringify({ ...req(uid, {}), body: b }),
      })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(undefined, null, '', 7, ['m'])
        .map((m) => (uid: string) => ({ kind: 'missing_model' as const, text: JSON.stringify(req(uid, {}, m)) })),
    },
    {
      weight: 1,
      arbitrary: fc.constant((uid: string) => ({
        kind: 'stream_true' as const,
        text: JSON.stringify(req(uid, { stream: true })),
      })),
    },
    {
      weight: 1,
      arbitrary: fc
        .nat()
        .map(
          (n) => (uid: string, prev: string[]) =>
            prev.length === 0
              ? { kind: 'valid' as const, text: JSON.stringify(req(uid, {})), registers: uid, model }
              : { kind: 'duplicate' as const, text: JSON.stringify(req(prev[n % prev.length], {})) },
        ),
    },
    {
      weight: 1,
      arbitrary: nastyString
        .filter((s) => s !== model && s !== other && s.length > 0)
        .map((m) => (uid: string) => ({
          kind: 'unknown_model' as const,
          text: JSON.stringify(req(uid, {}, m)),
          registers: uid,
          model: m,
        })),
    },
    {
      weight: 1,
      arbitrary: fc.constant((uid: string) => ({
        kind: 'mismatched_model' as const,
        text: JSON.stringify(req(uid, {}, other)),
        registers: uid,
        model: other,
      })),
    },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 513, max: 2000 }).map((n) => (uid: string) => ({
        kind: 'long_custom_id' as const,
        text: JSON.stringify(req(uid.padEnd(n, 'z'), {})),
      })),
    },
  );
}
