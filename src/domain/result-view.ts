/**
 * Reads a batch request's input line and its stored result line into what the dashboard's
 * results view shows. Pure: tolerant of any JSON the engine sent (a field that is missing or of
 * another type reads as null, never throws).
 */

export interface ChatMessage {
  role: string;
  content: unknown;
  [k: string]: unknown;
}

/** The request's messages (chat), prompt (completions) or input (embeddings); null if unreadable. */
export type RequestInput = ChatMessage[] | string | unknown[] | null;

export interface ResultView {
  /** Assistant text (chat), completion text, or a summary of the embeddings; null when none. */
  output: string | null;
  finishReason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
  error: { code: string; message: string } | null;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** The input of one batch line (its JSON text as in the input file). */
export function inputOf(lineJson: string | null): RequestInput {
  if (lineJson === null) return null;
  let line: unknown;
  try {
    line = JSON.parse(lineJson);
  } catch {
    return null;
  }
  const body = isObj(line) && isObj(line.body) ? line.body : null;
  if (!body) return null;
  if (Array.isArray(body.messages)) return body.messages as ChatMessage[];
  if (typeof body.prompt === 'string' || Array.isArray(body.prompt)) return body.prompt as string | unknown[];
  if (typeof body.input === 'string' || Array.isArray(body.input)) return body.input as string | unknown[];
  return null;
}

/** Plain text of a message's content (a string, or the text parts of a multimodal array). */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) =>
        isObj(p) && typeof p.text === 'string' ? p.text : isObj(p) && typeof p.type === 'string' ? `[${p.type}]` : '',
      )
      .filter(Boolean)
      .join(' ');
  }
  return content == null ? '' : JSON.stringify(content);
}

/** The input as one searchable string. */
export function inputText(input: RequestInput): string {
  if (input === null) return '';
  if (typeof input === 'string') return input;
  return input
    .map((m) => (isObj(m) && 'content' in m ? contentText(m.content) : typeof m === 'string' ? m : JSON.stringify(m)))
    .join('\n');
}

/** What a stored result line (output or error file line) says. */
export function viewResult(resultLine: string | null): ResultView {
  const none: ResultView = { output: null, finishReason: null, usage: null, error: null };
  if (resultLine === null) return none;
  let line: unknown;
  try {
    line = JSON.parse(resultLine);
  } catch {
    return none;
  }
  if (!isObj(line)) return none;
  if (isObj(line.error)) return { ...none, error: errorOf(line.error) };
  const response = isObj(line.response) ? line.response : null;
  const body = response && isObj(response.body) ? response.body : null;
  if (!response || !body) return none;
  const status = num(response.status_code);
  if (status < 200 || status >= 300)
    return { ...none, error: errorOf(isObj(body.error) ? body.error : { message: `HTTP ${status}` }) };
  const usage = isObj(body.usage)
    ? { prompt_tokens: num(body.usage.prompt_tokens), completion_tokens: num(body.usage.completion_tokens) }
    : null;
  const choice = Array.isArray(body.choices) && isObj(body.choices[0]) ? body.choices[0] : null;
  if (choice) {
    const text = isObj(choice.message)
      ? contentText(choice.message.content)
      : typeof choice.text === 'string'
        ? choice.text
        : null;
    return {
      output: text,
      finishReason: typeof choice.finish_reason === 'string' ? choice.finish_reason : null,
      usage,
      error: null,
    };
  }
  if (Array.isArray(body.data)) {
    const first = isObj(body.data[0]) ? body.data[0].embedding : undefined;
    const dims = Array.isArray(first) ? first.length : typeof first === 'string' ? 'base64' : '?';
    return {
      output: `${body.data.length} embedding${body.data.length === 1 ? '' : 's'} × ${dims} dims`,
      finishReason: null,
      usage,
      error: null,
    };
  }
  return { ...none, usage };
}

function errorOf(e: Record<string, unknown>): { code: string; message: string } {
  return {
    code: typeof e.code === 'string' ? e.code : typeof e.type === 'string' ? e.type : 'error',
    message: typeof e.message === 'string' ? e.message : '',
  };
}

/**
 * One starred answer as an OpenAI chat fine-tuning example: the request's messages followed
 * by the answer as the assistant's turn. A completions prompt becomes one user message. Null
 * when there is nothing to learn from (no answer, or an embeddings input).
 */
export function fineTuningLine(input: RequestInput, output: string | null, endpoint: string): string | null {
  if (output === null || input === null || endpoint === '/v1/embeddings') return null;
  let messages: unknown[];
  if (typeof input === 'string') messages = [{ role: 'user', content: input }];
  else if (endpoint === '/v1/completions')
    messages = [
      { role: 'user', content: input.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join('\n') },
    ];
  else messages = input;
  return JSON.stringify({ messages: [...messages, { role: 'assistant', content: output }] });
}
