/** Validates request bodies and turns them into deterministic plans (what to answer, how many tokens). */
import type { SimConfig } from './config.js';
import { badRequest, notFound } from '../src/engines/vllm-error-shape.js';
import {
  applyStop,
  buildCompletion,
  chatPromptTokens,
  countWords,
  lastUserWords,
  splitWords,
  type ChatMessageLike,
} from './text.js';

export type FinishReason = 'stop' | 'length';

export interface GenPlan {
  kind: 'chat' | 'completion';
  promptTokens: number;
  /** Final text of each choice (all n choices are identical). */
  text: string;
  /** Tokens of one choice. */
  completionTokens: number;
  finishReason: FinishReason;
  stopReason: string | null;
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

export interface EmbedPlan {
  kind: 'embedding';
  promptTokens: number;
  /** Keys the vectors are derived from, one per input item. */
  keys: string[];
  base64: boolean;
}

type Body = Record<string, unknown>;

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

/** undefined when absent/null, else a validated integer >= min. */
function optInt(body: Body, name: string, min: number): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw badRequest(`${name} must be an integer, got ${JSON.stringify(v)}.`);
  if (v < min) throw badRequest(`${name} must be at least ${min}, got ${v}.`);
  return v;
}

function checkSampling(body: Body): void {
  const t = body.temperature;
  if (t !== undefined && t !== null) {
    if (typeof t !== 'number' || !Number.isFinite(t))
      throw badRequest(`temperature must be a number, got ${JSON.stringify(t)}.`);
    if (t < 0 || t > 2) throw badRequest(`temperature must be in [0, 2], got ${t}.`);
  }
  const p = body.top_p;
  if (p !== undefined && p !== null && (typeof p !== 'number' || !(p > 0 && p <= 1))) {
    throw badRequest(`top_p must be in (0, 1], got ${JSON.stringify(p)}.`);
  }
}

function stopList(body: Body): string[] | null {
  const s = body.stop;
  if (s === undefined || s === null) return null;
  if (typeof s === 'string') return [s];
  if (Array.isArray(s) && s.every((x) => typeof x === 'string')) return s;
  throw badRequest('stop must be a string or an array of strings');
}

function streamFlags(body: Body): { stream: boolean; includeUsage: boolean } {
  const s = body.stream;
  if (s !== undefined && s !== null && typeof s !== 'boolean') throw badRequest('stream must be a boolean');
  const stream = s === true;
  const so = body.stream_options as { include_usage?: unknown } | null | undefined;
  const includeUsage = stream && !!so && typeof so === 'object' && so.include_usage === true;
  return { stream, includeUsage };
}

function contextError(maxLen: number, input: number, maxTokens: number) {
  return badRequest(
    `This model's maximum context length is ${maxLen} tokens. However, you requested ${input + maxTokens} tokens ` +
      `(${input} in the messages, ${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
  );
}

function inputTooLong(maxLen: number, input: number) {
  return badRequest(
    `This model's maximum context length is ${maxLen} tokens. However, your request has ${input} input tokens. ` +
      `Please reduce the length of the input messages.`,
  );
}

/** Shared tail of chat and completions: token budget, text, stop strings. */
function plan(
  kind: GenPlan['kind'],
  body: Body,
  cfg: SimConfig,
  promptTokens: number,
  echo: string[],
  maxTokens: number | undefined,
): GenPlan {
  checkSampling(body);
  const n = optInt(body, 'n', 1) ?? 1;
  const simOut = optInt(body, 'sim_output_tokens', 0);
  const stop = stopList(body);
  const { stream, includeUsage } = streamFlags(body);
  const maxLen = cfg.maxModelLen;
  if (maxTokens !== undefined && promptTokens + maxTokens > maxLen) throw contextError(maxLen, promptTokens, maxTokens);
  if (promptTokens >= maxLen) throw inputTooLong(maxLen, promptTokens);
  const target = simOut ?? cfg.outputTokens;
  const limit = Math.min(maxTokens ?? Infinity, maxLen - promptTokens);
  const count = Math.min(target, limit);
  const full = buildCompletion(echo, count);
  const cut = applyStop(full, stop);
  return {
    kind,
    promptTokens,
    text: cut.text,
    completionTokens: cut.stop === null ? count : countWords(cut.text),
    finishReason: cut.stop !== null || count >= target ? 'stop' : 'length',
    stopReason: cut.stop,
    n,
    stream,
    includeUsage,
  };
}

export function planChat(body: Body, cfg: SimConfig): GenPlan {
  const messages = body.messages;
  if (!Array.isArray(messages)) throw badRequest('messages must be an array of chat messages');
  if (messages.length === 0) throw badRequest('messages must not be empty');
  for (const m of messages) {
    if (m === null || typeof m !== 'object' || typeof (m as ChatMessageLike).role !== 'string') {
      throw badRequest('each message must be an object with a string role');
    }
  }
  const msgs = messages as ChatMessageLike[];
  // vLLM: max_completion_tokens takes precedence over the deprecated max_tokens.
  const maxTokens = optInt(body, 'max_completion_tokens', 1) ?? optInt(body, 'max_tokens', 1);
  if (body.max_completion_tokens != null) optInt(body, 'max_tokens', 1);
  return plan('chat', body, cfg, chatPromptTokens(msgs), lastUserWords(msgs), maxTokens);
}

const isInt = (x: unknown) => typeof x === 'number' && Number.isInteger(x);

export function planCompletion(body: Body, cfg: SimConfig): GenPlan {
  let p = body.prompt;
  if (p === undefined || p === null) throw badRequest('prompt is required');
  if (Array.isArray(p)) {
    if (p.length === 0) throw badRequest('prompt must not be empty');
    // Batched prompts (strings or token-id arrays): the simulator answers the first one.
    if (typeof p[0] === 'string' || Array.isArray(p[0])) p = p[0];
  }
  let promptTokens: number;
  let echo: string[];
  if (typeof p === 'string') {
    promptTokens = countWords(p);
    echo = splitWords(p);
  } else if (Array.isArray(p) && p.every(isInt)) {
    promptTokens = p.length;
    echo = p.map(String);
  } else throw badRequest('prompt must be a string, an array of strings, or token ids');
  return plan('completion', body, cfg, promptTokens, echo, optInt(body, 'max_tokens', 1));
}

export function planEmbedding(body: Body, cfg: SimConfig): EmbedPlan {
  const input = body.input;
  if (input === undefined || input === null) throw badRequest('input is required');
  const keys: string[] = [];
  let tokens = 0;
  const add = (item: unknown) => {
    let t: number;
    if (typeof item === 'string') {
      t = countWords(item);
      keys.push(item);
    } else if (Array.isArray(item) && item.every(isInt)) {
      t = item.length;
      keys.push(item.join(','));
    } else
      throw badRequest(
        'input must be a string, an array of strings, an array of token ids, or an array of arrays of token ids',
      );
    if (t > cfg.maxModelLen) throw inputTooLong(cfg.maxModelLen, t);
    tokens += t;
  };
  if (typeof input === 'string') add(input);
  else if (Array.isArray(input)) {
    if (input.length === 0) throw badRequest('input must not be empty');
    if (input.every(isInt)) add(input);
    else for (const item of input) add(item);
  } else add(input);
  const fmt = body.encoding_format;
  if (fmt !== undefined && fmt !== null && fmt !== 'float' && fmt !== 'base64') {
    throw badRequest(`encoding_format must be "float" or "base64", got ${JSON.stringify(fmt)}`);
  }
  return { kind: 'embedding', promptTokens: tokens, keys, base64: fmt === 'base64' };
}
