import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errorCatalogue } from '../../src/api/errors.js';
import { DEFAULT_MAX_ERRORS } from '../../src/control/validate-batch.js';

/**
 * docs/errors.md must list exactly the codes the server can produce, in three tables. The
 * HTTP table is checked against the catalogue; the other two against the source text of the
 * modules that write those codes.
 */
const root = new URL('../../', import.meta.url);
const read = (rel: string) => readFileSync(new URL(rel, root), 'utf8');
const doc = read('docs/errors.md');

const SECTIONS = {
  http: 'HTTP errors',
  validation: 'Validation errors (batch errors.data)',
  errorFile: 'Error file codes',
} as const;

/** The text under a `## heading`, up to the next `## ` heading (code fences respected). */
function section(markdown: string, heading: string): string {
  const lines = markdown.split(/\r?\n/);
  const norm = (s: string) => s.trim().replace(/\s+/g, ' ').toLowerCase();
  let inFence = false;
  let start = -1;
  let end = lines.length;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*(```|~~~)/.test(line)) inFence = !inFence;
    if (inFence) continue;
    const m = /^##\s+(.+?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    if (start >= 0) {
      end = i;
      break;
    }
    if (norm(m[1]!) === norm(heading)) start = i + 1;
  }
  if (start < 0) throw new Error(`docs/errors.md has no "## ${heading}" section`);
  return lines.slice(start, end).join('\n');
}

interface Row {
  code: string;
  cells: string[];
}

/** Rows of every markdown table in `text` whose first cell is a `code` in backticks. */
function tableRows(text: string): Row[] {
  const rows: Row[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (!/^\s*\|/.test(line)) continue;
    const cells = line
      .trim()
      .replace(/^\|/, '')
      .replace(/\|$/, '')
      .split(/(?<!\\)\|/)
      .map((c) => c.trim());
    const m = /^`([a-z0-9_]+)`$/.exec(cells[0] ?? '');
    if (m) rows.push({ code: m[1]!, cells });
  }
  return rows;
}

function codesIn(rows: Row[]): string[] {
  return rows.map((r) => r.code);
}

function duplicates(codes: string[]): string[] {
  return codes.filter((c, i) => codes.indexOf(c) !== i);
}

/** Code literals written by a module: `code: 'x'` and calls like err(line, 'x') / errorOnlyLine(id, 'x'). */
function literalCodes(source: string, calls: string[]): Set<string> {
  const found = new Set<string>();
  for (const m of source.matchAll(/\bcode:\s*['"]([a-z0-9_]+)['"]/g)) found.add(m[1]!);
  for (const fn of calls) {
    const re = new RegExp(`\\b${fn}\\(\\s*[^,()]+,\\s*['"]([a-z0-9_]+)['"]`, 'g');
    for (const m of source.matchAll(re)) found.add(m[1]!);
  }
  return found;
}

/** Both directions at once, so a failure names the codes: { undocumented, notProduced }. */
function drift(documented: string[], produced: Set<string>) {
  return {
    undocumented: [...produced].filter((c) => !documented.includes(c)).sort(),
    notProduced: documented.filter((c) => !produced.has(c)).sort(),
  };
}

describe('docs/errors.md: HTTP errors', () => {
  const rows = tableRows(section(doc, SECTIONS.http));
  const documented = codesIn(rows);
  const catalogue = Object.keys(errorCatalogue);

  it('documents every catalogue code', () => {
    const missing = catalogue.filter((c) => !documented.includes(c));
    expect(missing, 'codes in src/api/errors.ts missing from docs/errors.md "## HTTP errors"').toEqual([]);
  });

  it('documents no code the catalogue lacks, and none twice', () => {
    const extra = documented.filter((c) => !catalogue.includes(c));
    expect(extra, 'codes in docs/errors.md "## HTTP errors" that src/api/errors.ts does not have').toEqual([]);
    expect(duplicates(documented)).toEqual([]);
  });

  it('gives each code the catalogue status and type', () => {
    for (const row of rows) {
      const entry = errorCatalogue[row.code as keyof typeof errorCatalogue];
      if (!entry) continue;
      expect(row.cells[1], `status of ${row.code}`).toBe(String(entry.status));
      expect(row.cells[2], `type of ${row.code}`).toBe(`\`${entry.type}\``);
      expect(
        row.cells.slice(3).every((c) => c.length > 0),
        `${row.code} needs "when" and "what to do"`,
      ).toBe(true);
    }
  });
});

describe('docs/errors.md: validation errors', () => {
  const documented = codesIn(tableRows(section(doc, SECTIONS.validation)));
  const produced = new Set([
    ...literalCodes(read('src/domain/batch-line.ts'), ['err']),
    ...literalCodes(read('src/control/validate-batch.ts'), ['err']),
    // whole-file failure recorded by the batch runner (`errors: [{ code: ... }]`)
    ...literalCodes(read('src/control/batch-runner.ts'), []),
  ]);

  it('finds the codes in the source (the scan itself works)', () => {
    for (const c of ['invalid_json_line', 'duplicate_custom_id', 'too_many_errors', 'input_file_unreadable'])
      expect(produced).toContain(c);
  });

  it('documents every code the validators write, and only those', () => {
    expect(
      drift(documented, produced),
      'docs/errors.md "## Validation errors (batch errors.data)" vs the validators',
    ).toEqual({ undocumented: [], notProduced: [] });
    expect(duplicates(documented)).toEqual([]);
  });

  it('states the cap on listed errors', () => {
    expect(DEFAULT_MAX_ERRORS).toBe(1000);
    expect(section(doc, SECTIONS.validation)).toMatch(new RegExp(`\\b${DEFAULT_MAX_ERRORS}\\b`));
  });
});

describe('docs/errors.md: error file codes', () => {
  const documented = codesIn(tableRows(section(doc, SECTIONS.errorFile)));
  const produced = new Set([
    ...literalCodes(read('src/control/finalize.ts'), ['errorOnlyLine']),
    ...literalCodes(read('src/worker/run-chunk.ts'), ['errorOnlyLine']),
    ...literalCodes(read('src/control/results-consumer.ts'), ['errorOnlyLine']),
    // batch-runner's `code:` literals are errors.data (above); only its error lines count here
    ...literalCodes(read('src/control/batch-runner.ts').replace(/\bcode:\s*['"][a-z0-9_]+['"]/g, ''), [
      'errorOnlyLine',
    ]),
  ]);

  it('finds the codes in the source (the scan itself works)', () => {
    for (const c of ['batch_cancelled', 'batch_expired', 'engine_unavailable', 'bad_engine_response'])
      expect(produced).toContain(c);
  });

  it('documents every code written to error files, and only those', () => {
    expect(
      drift(documented, produced),
      'docs/errors.md "## Error file codes" vs the code that writes error lines',
    ).toEqual({ undocumented: [], notProduced: [] });
    expect(duplicates(documented)).toEqual([]);
  });

  it('explains that engine 4xx answers keep their status and body', () => {
    const text = section(doc, SECTIONS.errorFile);
    expect(text).toMatch(/4xx/);
    expect(text).toMatch(/status_code/);
  });
});
