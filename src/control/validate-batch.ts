import { validateLine, type LineError } from '../domain/batch-line.js';
import type { RequestSlice } from '../store/batches-repo.js';
import { readLineBatches } from '../store/line-reader.js';

export interface ValidationLimits {
  maxRequests: number;
  maxBytes: number;
  maxLineBytes: number;
  /** Every bad line is reported up to this many; then one `too_many_errors` entry says how many more. */
  maxErrors: number;
  maxEmbeddingInputs: number;
}

export const DEFAULT_MAX_ERRORS = 1000;

export type ValidationResult =
  { ok: true; model: string; requests: RequestSlice[] } | { ok: false; errors: LineError[] };

/**
 * Streams the input file once, line by line, and checks every line (not only the first bad
 * one). One model per batch, as OpenAI requires: the first line's model is the batch's.
 */
export async function validateBatchFile(
  path: string,
  fileBytes: number,
  endpoint: string,
  knownModels: ReadonlySet<string>,
  limits: ValidationLimits,
  isCancelled: () => boolean,
): Promise<ValidationResult | { ok: false; cancelled: true }> {
  const errors: LineError[] = [];
  let omitted = 0;
  const add = (e: LineError) => (errors.length < limits.maxErrors ? errors.push(e) : (omitted += 1));
  if (fileBytes > limits.maxBytes) {
    add({
      code: 'file_too_large',
      message: `The input file is ${fileBytes} bytes; a batch takes at most ${limits.maxBytes}. Split it into several batches.`,
      param: 'input_file_id',
      line: null,
    });
  }

  const seen = new Map<string, number>();
  const requests: RequestSlice[] = [];
  let model: string | undefined;
  let embeddingInputs = 0;
  let count = 0;
  // Lines come ~256 KB at a time: one await per few hundred lines, not per line.
  read: for await (const batch of readLineBatches(path, limits.maxLineBytes))
    for (const raw of batch) {
      if ((count & 1023) === 0 && isCancelled()) return { ok: false, cancelled: true };
      count += 1;
      if (count > limits.maxRequests) {
        add({
          code: 'too_many_requests',
          message: `The input file has more than ${limits.maxRequests} requests, the most one batch takes. Split it into several batches.`,
          param: null,
          line: raw.line,
        });
        break read;
      }
      if (raw.problem === 'too_long') {
        add({
          code: 'line_too_long',
          message: `Line ${raw.line} is ${raw.length} bytes; a line may have at most ${limits.maxLineBytes}.`,
          param: null,
          line: raw.line,
        });
        continue;
      }
      if (raw.problem === 'invalid_utf8') {
        add({
          code: 'invalid_utf8',
          message: `Line ${raw.line} is not valid UTF-8. Save the file as UTF-8.`,
          param: null,
          line: raw.line,
        });
        continue;
      }
      const parsed = validateLine(raw.text!, raw.line, endpoint);
      if (Array.isArray(parsed)) {
        parsed.forEach(add);
        continue;
      }
      const first = seen.get(parsed.customId);
      if (first !== undefined) {
        add({
          code: 'duplicate_custom_id',
          message: `Line ${raw.line}: custom_id "${truncate(parsed.customId)}" was already used on line ${first}. Each custom_id must be unique in the file.`,
          param: 'custom_id',
          line: raw.line,
        });
        continue;
      }
      seen.set(parsed.customId, raw.line);
      const m = parsed.model!;
      if (!knownModels.has(m)) {
        add({
          code: 'model_not_found',
          message: `Line ${raw.line}: model "${truncate(m)}" is not in this server's registry. See GET /v1/models.`,
          param: 'body.model',
          line: raw.line,
        });
        continue;
      }
      if (model === undefined) model = m;
      else if (m !== model) {
        add({
          code: 'mismatched_model',
          message: `Line ${raw.line}: model "${truncate(m)}" differs from "${model}" on the first line. A batch runs one model: put each model's requests in its own batch.`,
          param: 'body.model',
          line: raw.line,
        });
        continue;
      }
      embeddingInputs += parsed.embeddingInputs;
      requests.push({
        idx: requests.length,
        customId: parsed.customId,
        line: raw.line,
        offset: raw.offset,
        length: raw.length,
      });
    }
  if (embeddingInputs > limits.maxEmbeddingInputs) {
    add({
      code: 'too_many_embedding_inputs',
      message: `The batch has ${embeddingInputs} embedding inputs; at most ${limits.maxEmbeddingInputs} are allowed across all requests.`,
      param: null,
      line: null,
    });
  }
  if (count === 0)
    add({
      code: 'empty_file',
      message: 'The input file has no requests. Upload a JSONL file with one request per line.',
      param: 'input_file_id',
      line: null,
    });
  if (omitted > 0)
    errors.push({
      code: 'too_many_errors',
      message: `${omitted} more invalid lines are not listed (the first ${limits.maxErrors} are).`,
      param: null,
      line: null,
    });
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, model: model!, requests };
}

function truncate(s: string, n = 80): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
