/**
 * Validation of one batch input line. Pure: takes the line's text, returns the request or
 * the errors, each with OpenAI's {code, message, param} and the 1-based line number.
 */
export interface LineError {
  code: string;
  message: string;
  param: string | null;
  line: number | null;
}

export interface ParsedLine {
  customId: string;
  model: string | undefined;
  /** Inputs counted toward the 50,000-embedding-inputs limit (embeddings only). */
  embeddingInputs: number;
}

export const MAX_CUSTOM_ID_LENGTH = 512;
/**
 * Deepest nesting of arrays and objects a line may have. JSON.parse copes with any depth, but
 * the dispatcher re-serialises each body (JSON.stringify recurses and overflows the stack at a
 * few thousand levels), and engines parse it again (Python's json stops at ~1000).
 */
export const MAX_JSON_DEPTH = 256;

function err(line: number, code: string, message: string, param: string | null = null): LineError {
  return { code, message, param, line };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * True when `value` nests arrays/objects deeper than `max` levels. Recursive but safe at any
 * depth: it stops descending at `max + 1` levels. No allocation per node (a line's walk costs a
 * fraction of its JSON.parse).
 */
export function nestsDeeperThan(value: unknown, max: number, depth = 1): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (depth > max) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (typeof v === 'object' && v !== null && nestsDeeperThan(v, max, depth + 1)) return true;
    }
    return false;
  }
  for (const k in value) {
    const v = (value as Record<string, unknown>)[k];
    if (typeof v === 'object' && v !== null && nestsDeeperThan(v, max, depth + 1)) return true;
  }
  return false;
}

function countEmbeddingInputs(input: unknown): number {
  if (Array.isArray(input))
    return input.length === 0 ? 0 : input.every((x) => typeof x === 'number') ? 1 : input.length;
  return 1;
}

/** Checks one non-empty line; `endpoint` is the batch's. */
export function validateLine(text: string, line: number, endpoint: string): ParsedLine | LineError[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const bom =
      text.charCodeAt(0) === 0xfeff
        ? ' It starts with a byte order mark (U+FEFF): save the file as UTF-8 without BOM, or remove the character.'
        : '';
    return [
      err(
        line,
        'invalid_json_line',
        `Line ${line} is not valid JSON (${(e as Error).message}).${bom} Each line must be one JSON object.`,
      ),
    ];
  }
  if (!isPlainObject(value))
    return [
      err(
        line,
        'invalid_json_line',
        `Line ${line} is JSON but not an object. Each line must be {"custom_id", "method", "url", "body"}.`,
      ),
    ];
  // Deeper than MAX_JSON_DEPTH needs more than 2 * MAX_JSON_DEPTH bracket characters: short lines skip the walk.
  if (text.length > 2 * MAX_JSON_DEPTH && nestsDeeperThan(value, MAX_JSON_DEPTH)) {
    return [
      err(
        line,
        'invalid_json_line',
        `Line ${line} nests arrays or objects more than ${MAX_JSON_DEPTH} levels deep. Flatten the request.`,
      ),
    ];
  }

  const errors: LineError[] = [];
  const { custom_id: customId, method, url, body } = value;
  if (typeof customId !== 'string' || customId.length === 0) {
    errors.push(
      err(
        line,
        'missing_custom_id',
        `Line ${line} has no custom_id. Give every line a unique string custom_id.`,
        'custom_id',
      ),
    );
  } else if (customId.length > MAX_CUSTOM_ID_LENGTH) {
    errors.push(
      err(
        line,
        'invalid_custom_id',
        `Line ${line}: custom_id is longer than ${MAX_CUSTOM_ID_LENGTH} characters.`,
        'custom_id',
      ),
    );
  }
  if (method !== 'POST') {
    errors.push(
      err(
        line,
        'invalid_method',
        `Line ${line}: method must be "POST", got ${JSON.stringify(method ?? null)}.`,
        'method',
      ),
    );
  }
  if (url !== endpoint) {
    errors.push(
      err(
        line,
        'invalid_url',
        `Line ${line}: url ${JSON.stringify(url ?? null)} does not match the batch's endpoint "${endpoint}". All lines must use the batch's endpoint.`,
        'url',
      ),
    );
  }
  let model: string | undefined;
  let embeddingInputs = 0;
  if (!isPlainObject(body)) {
    errors.push(
      err(line, 'invalid_body', `Line ${line}: body must be a JSON object with the request parameters.`, 'body'),
    );
  } else {
    if (typeof body.model !== 'string' || body.model.length === 0) {
      errors.push(
        err(
          line,
          'missing_model',
          `Line ${line}: body.model is missing. Name a model from GET /v1/models.`,
          'body.model',
        ),
      );
    } else model = body.model;
    if (body.stream === true) {
      errors.push(
        err(
          line,
          'invalid_body',
          `Line ${line}: body.stream must not be true in a batch; results are written to the output file.`,
          'body.stream',
        ),
      );
    }
    if (endpoint === '/v1/embeddings') embeddingInputs = countEmbeddingInputs(body.input);
  }
  if (errors.length) return errors;
  return { customId: customId as string, model, embeddingInputs };
}
