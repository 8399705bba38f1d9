/** Validates request bodies (vLLM's rules and messages) into what the generator needs. Pure. */
import { badRequest, notFound } from '../vllm-error-shape.js';

export type Body = Record<string, unknown>;

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface Sampling {
  temperature: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
}

export interface GenParams {
  /** Output cap asked for (max_completion_tokens ?? max_tokens); undefined: up to the context end. */
  maxTokens: number | undefined;
  n: number;
  stop: string[];
  includeStop: boolean;
  stopTokenIds: number[];
  ignoreEos: boolean;
  stream: boolean;
  includeUsage: boolean;
  sampling: Sampling;
}

export function parseBody(raw: string): Body {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw badRequest(`Invalid JSON in request body: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badRequest('Request body must be a JSON object');
  return v as Body;
}

export function checkModel(body: Body, model: string): void {
  const m = body.model;
  if (m === undefined || m === null) return; // vLLM falls back to the served model
  if (typeof m !== 'string') throw badRequest('model must be a string');
  if (m !== model) throw notFound(`The model \`${m}\` does not exist.`);
}

const present = (v: unknown) => v !== undefined && v !== null;

/** undefined when absent/null, else a validated integer >= min (and <= max). */
function optInt(body: Body, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = body[name];
  if (!present(v)) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw badRequest(`${name} must be an integer, got ${JSON.stringify(v)}.`);
  if (v < min) throw badRequest(`${name} must be at least ${min}, got ${v}.`);
  if (v > max) throw badRequest(`${name} must be at most ${max}, got ${v}.`);
  return v;
}

function optNum(body: Body, name: string, ok: (x: number) => boolean, range: string): number | undefined {
  const v = body[name];
  if (!present(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
    throw badRequest(`${name} must be ${range}, got ${JSON.stringify(v)}.`);
  return v;
}

function optBool(body: Body, name: string): boolean {
  const v = body[name];
  if (!present(v)) return false;
  if (typeof v !== 'boolean') throw badRequest(`${name} must be a boolean`);
  return v;
}

function unsupported(what: string) {
  return badRequest(`${what} is not supported by this engine`);
}

/** Request fields this engine cannot honour: a clear 400 beats a silently different answer. */
function rejectUnsupported(body: Body, kind: 'chat' | 'completion'): void {
  if (body.logprobs === true || (kind === 'completion' && typeof body.logprobs === 'number'))
    throw unsupported('logprobs');
  if (present(body.top_logprobs) && body.top_logprobs !== 0) throw unsupported('top_logprobs');
  if (Array.isArray(body.tools) && body.tools.length > 0) throw unsupported('tools');
  if (present(body.functions)) throw unsupported('functions');
  const rf = body.response_format as { type?: unknown } | null | undefined;
  if (present(rf) && (typeof rf !== 'object' || rf.type !== 'text'))
    throw unsupported('response_format other than {"type":"text"}');
  if (body.echo === true) throw unsupported('echo');
  if (typeof body.suffix === 'string' && body.suffix !== '') throw unsupported('suffix');
  if (present(body.best_of) && body.best_of !== 1 && body.best_of !== body.n) throw unsupported('best_of');
  if (body.continue_final_message === true) throw unsupported('continue_final_message');
}

function stopList(body: Body): string[] {
  const s = body.stop;
  if (!present(s)) return [];
  if (typeof s === 'string') return s === '' ? [] : [s];
  if (Array.isArray(s) && s.every((x) => typeof x === 'string')) return s.filter((x) => x !== '');
  throw badRequest('stop must be a string or an array of strings');
}

function stopTokenIds(body: Body): number[] {
  const s = body.stop_token_ids;
  if (!present(s)) return [];
  if (Array.isArray(s) && s.every((x) => Number.isInteger(x) && (x as number) >= 0)) return s as number[];
  throw badRequest('stop_token_ids must be an array of token ids');
}

export function genParams(body: Body, kind: 'chat' | 'completion'): GenParams {
  rejectUnsupported(body, kind);
  // vLLM: max_completion_tokens takes precedence over the deprecated max_tokens.
  const maxTokensField = optInt(body, 'max_tokens', 1);
  const maxTokens = kind === 'chat' ? (optInt(body, 'max_completion_tokens', 1) ?? maxTokensField) : maxTokensField;
  const stream = optBool(body, 'stream');
  const so = body.stream_options as { include_usage?: unknown } | null | undefined;
  if (present(so) && (typeof so !== 'object' || Array.isArray(so)))
    throw badRequest('stream_options must be an object');
  if (present(so) && !stream) throw badRequest('Stream options can only be defined when `stream=True`.');
  const temperature = optNum(body, 'temperature', (t) => t >= 0 && t <= 2, 'in [0, 2]') ?? 1;
  const topP = optNum(body, 'top_p', (p) => p > 0 && p <= 1, 'in (0, 1]');
  const topK = optInt(body, 'top_k', -1);
  const minP = optNum(body, 'min_p', (p) => p >= 0 && p <= 1, 'in [0, 1]');
  optNum(body, 'presence_penalty', (p) => p >= -2 && p <= 2, 'in [-2, 2]');
  optNum(body, 'frequency_penalty', (p) => p >= -2 && p <= 2, 'in [-2, 2]');
  const seed = optInt(body, 'seed', Number.MIN_SAFE_INTEGER);
  const sampling: Sampling = { temperature };
  if (topP !== undefined && topP < 1) sampling.topP = topP;
  if (topK !== undefined && topK > 0) sampling.topK = topK;
  if (minP !== undefined && minP > 0) sampling.minP = minP;
  // llama.cpp seeds are uint32.
  if (seed !== undefined) sampling.seed = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  return {
    maxTokens,
    n: optInt(body, 'n', 1, 64) ?? 1,
    stop: stopList(body),
    includeStop: optBool(body, 'include_stop_str_in_output'),
    stopTokenIds: stopTokenIds(body),
    ignoreEos: optBool(body, 'ignore_eos'),
    stream,
    includeUsage: stream && !!so && so.include_usage === true,
    sampling,
  };
}

function textOf(content: unknown, role: string): string {
  if (content === undefined || content === null) {
    if (role === 'assistant') return '';
    throw badRequest(`a ${role} message needs content`);
  }
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest('message content must be a string or an array of content parts');
  const texts: string[] = [];
  for (const part of content) {
    const p = part as { type?: unknown; text?: unknown } | null;
    if (!p || typeof p !== 'object') throw badRequest('each content part must be an object');
    if (p.type !== 'text' || typeof p.text !== 'string')
      throw unsupported(`content part of type ${JSON.stringify(p.type)} (text only)`);
    texts.push(p.text);
  }
  return texts.join('\n'); // as vLLM joins text parts
}

export function chatMessages(body: Body): ChatMessage[] {
  const messages = body.messages;
  if (!Array.isArray(messages)) throw badRequest('messages must be an array of chat messages');
  if (messages.length === 0) throw badRequest('messages must not be empty');
  return messages.map((m) => {
    if (m === null || typeof m !== 'object' || typeof (m as { role?: unknown }).role !== 'string') {
      throw badRequest('each message must be an object with a string role');
    }
    const msg = m as { role: string; content?: unknown; tool_calls?: unknown };
    const role = msg.role === 'developer' ? 'system' : msg.role;
    if (role !== 'system' && role !== 'user' && role !== 'assistant')
      throw unsupported(`the message role "${msg.role}"`);
    if (Array.isArray(msg.tool_calls) && msg.tool_calls.length > 0) throw unsupported('tool_calls');
    return { role, content: textOf(msg.content, role) };
  });
}

/** The prompts of a completions request: strings, or token-id arrays (vLLM answers each). */
export function completionPrompts(body: Body): (string | number[])[] {
  const p = body.prompt;
  if (!present(p)) throw badRequest('prompt is required');
  const isIds = (x: unknown): x is number[] =>
    Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t) && t >= 0);
  if (typeof p === 'string') return [p];
  if (isIds(p)) return [p];
  if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || isIds(x))) return p;
  throw badRequest('prompt must be a string, an array of strings, token ids, or an array of token-id arrays');
}

/** vLLM's context checks, same wording. Returns the output budget. */
export function outputBudget(maxLen: number, input: number, maxTokens: number | undefined): number {
  if (maxTokens !== undefined && input + maxTokens > maxLen) {
    throw badRequest(
      `This model's maximum context length is ${maxLen} tokens. However, you requested ${input + maxTokens} tokens ` +
        `(${input} in the messages, ${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
    );
  }
  if (input >= maxLen) {
    throw badRequest(
      `This model's maximum context length is ${maxLen} tokens. However, your request has ${input} input tokens. ` +
        `Please reduce the length of the input messages.`,
    );
  }
  return maxTokens ?? maxLen - input;
}
