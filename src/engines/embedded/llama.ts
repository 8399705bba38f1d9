/**
 * llama.cpp through node-llama-cpp: one model, one context of `parallel` sequences, a FIFO
 * pool of those sequences, chat rendering with the model's own chat template, and the token
 * loop (max tokens, stop strings, stop tokens, end-of-generation, abort).
 */
import {
  getLlama,
  LlamaLogLevel,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import type { EmbeddedConfig } from './config.js';
import { badRequest } from '../vllm-error-shape.js';
import { Pool } from './pool.js';
import type { ChatMessage, Sampling } from './requests.js';
import { StopMatcher } from './stop.js';

/** Context length used when --ctx is not given: the model's training context, at most this. */
export const DEFAULT_MAX_CTX = 4096;

export interface GenRequest {
  tokens: readonly number[];
  maxTokens: number;
  sampling: Sampling;
  stop: readonly string[];
  includeStop: boolean;
  stopTokenIds: readonly number[];
  ignoreEos: boolean;
  /** Stop texts and tokens of the chat template (chat requests only; no stop_reason). */
  templateStops?: { texts: readonly string[]; tokens: ReadonlySet<number> };
  signal: AbortSignal;
  /** Streamed text, in order; never contains (part of) a stop string. */
  onText?: (text: string) => void;
}

export interface GenResult {
  text: string;
  completionTokens: number;
  finishReason: 'stop' | 'length';
  stopReason: string | number | null;
}

export class LlamaEngine {
  readonly pool: Pool<LlamaContextSequence>;
  /** Stop triggers of the chat template, beyond the model's end-of-generation tokens. */
  readonly chatStops = { texts: [] as string[], tokens: new Set<number>() };
  /** Tokens generated so far, aborted requests included (vLLM's generation_tokens_total). */
  generatedTokens = 0;
  /** Prompt tokens evaluated so far. */
  promptTokensTotal = 0;
  readonly vocabSize: number | null;

  private constructor(
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    private readonly chatWrapper: ChatWrapper,
    /** Context length per sequence (max_model_len). */
    readonly contextSize: number,
  ) {
    const seqs: LlamaContextSequence[] = [];
    while (context.sequencesLeft > 0) seqs.push(context.getSequence());
    this.pool = new Pool(seqs);
    const tokens = (model.fileInfo.metadata as unknown as { tokenizer?: { ggml?: { tokens?: unknown } } }).tokenizer
      ?.ggml?.tokens;
    this.vocabSize = Array.isArray(tokens) ? tokens.length : null;
    const { stopGenerationTriggers } = chatWrapper.generateContextState({
      chatHistory: [
        { type: 'user', text: '' },
        { type: 'model', response: [] },
      ],
    });
    for (const trigger of stopGenerationTriggers) {
      if (trigger.values.every((v) => typeof v === 'string')) {
        const text = trigger.values.join('');
        if (text) this.chatStops.texts.push(text);
        continue;
      }
      const ids = trigger.tokenize(model.tokenizer);
      if (ids.length === 1) this.chatStops.tokens.add(ids[0]!);
    }
  }

  static async load(cfg: EmbeddedConfig): Promise<LlamaEngine> {
    // On Linux, getLlama first loads the prebuilt binary in a forked test process, which inherits
    // our execArgv: `--import tsx` when this engine runs from source (tests, dev), which makes it
    // take twice as long to start. It needs no loader. (Compiled, dist/engine-embedded.js, the
    // execArgv is already empty.)
    const execArgv = process.execArgv;
    process.execArgv = [];
    const llama = await getLlama({
      gpu: false,
      build: 'never',
      maxThreads: cfg.threads,
      progressLogs: false,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        const line = message.trimEnd();
        if (line) process.stderr.write(`llama.cpp ${level}: ${line}\n`);
      },
    }).finally(() => {
      process.execArgv = execArgv;
    });
    const model = await llama.loadModel({ modelPath: cfg.gguf });
    const ctx = cfg.ctx ?? Math.min(model.trainContextSize, DEFAULT_MAX_CTX);
    const context = await model.createContext({ contextSize: ctx, sequences: cfg.parallel, threads: cfg.threads });
    return new LlamaEngine(model, context, resolveChatWrapper(model), Math.min(ctx, context.contextSize));
  }

  /** The chat rendered with the model's template, generation prompt included, as tokens. */
  chatTokens(messages: readonly ChatMessage[]): Token[] {
    const history: ChatHistoryItem[] = messages.map((m) =>
      m.role === 'assistant'
        ? { type: 'model', response: [m.content] }
        : m.role === 'system'
          ? { type: 'system', text: m.content }
          : { type: 'user', text: m.content },
    );
    history.push({ type: 'model', response: [] });
    let state;
    try {
      state = this.chatWrapper.generateContextState({ chatHistory: history });
    } catch (e) {
      throw badRequest(`cannot apply the chat template: ${(e as Error).message}`);
    }
    return state.contextText.tokenize(this.model.tokenizer);
  }

  /**
   * A completions prompt: text as the tokenizer sees it (special tokens such as <|im_start|> parsed,
   * BOS added when the model wants one, as vLLM's tokenizer does), or token ids as given.
   */
  promptTokens(prompt: string | readonly number[]): Token[] {
    if (typeof prompt !== 'string') {
      const bad = this.vocabSize === null ? undefined : prompt.find((t) => t >= this.vocabSize!);
      if (bad !== undefined) throw badRequest(`Token id ${bad} is out of vocabulary (size ${this.vocabSize}).`);
      return prompt as Token[];
    }
    const tokens = this.model.tokenize(prompt, true);
    const bos = this.model.tokens.bos;
    return bos !== null && this.model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens;
  }

  /** Generates on a fresh sequence (waiting for one if all are busy). Rejects with the signal's reason when aborted. */
  async generate(req: GenRequest): Promise<GenResult> {
    const seq = await this.pool.acquire(req.signal);
    try {
      await seq.clearHistory();
      return await this.run(seq, req);
    } finally {
      this.pool.release(seq);
    }
  }

  private async run(seq: LlamaContextSequence, req: GenRequest): Promise<GenResult> {
    const { model } = this;
    const hidden = new Set(req.templateStops?.texts ?? []);
    const hiddenTokens = req.ignoreEos ? new Set<number>() : (req.templateStops?.tokens ?? new Set<number>());
    const matcher = new StopMatcher([...req.stop, ...hidden], req.includeStop);
    const stopIds = new Set<number>(req.stopTokenIds);
    const generated: Token[] = [];
    let pending: Token[] = [];
    let text = '';
    let finishReason: GenResult['finishReason'] = 'length';
    let stopReason: GenResult['stopReason'] = null;
    let hitStopString = false;

    const emit = (piece: string): void => {
      const r = matcher.push(piece);
      if (r.emit) {
        text += r.emit;
        req.onText?.(r.emit);
      }
      if (r.stop !== null) {
        hitStopString = true;
        finishReason = 'stop';
        stopReason = hidden.has(r.stop) && !req.stop.includes(r.stop) ? null : r.stop;
      }
    };
    /** Detokenizes pending tokens, holding back an incomplete UTF-8 sequence (unless forced). */
    const decode = (force: boolean): void => {
      if (pending.length === 0) return;
      const piece = model.detokenize(pending, false, generated.slice(-8));
      if (!force && piece.endsWith('\uFFFD') && pending.length < 4) return;
      generated.push(...pending);
      pending = [];
      emit(piece);
    };

    let count = 0;
    this.promptTokensTotal += req.tokens.length;
    // vLLM's defaults (top_k and top_p off), not node-llama-cpp's (40, 0.95); EOG tokens are yielded so
    // that ignore_eos can go on past them.
    const options = { topK: 0, topP: 1, minP: 0, ...req.sampling, yieldEogToken: true };
    for await (const token of seq.evaluate(req.tokens as Token[], options)) {
      if (req.signal.aborted) break;
      this.generatedTokens++;
      if ((!req.ignoreEos && model.isEogToken(token)) || hiddenTokens.has(token)) {
        finishReason = 'stop';
        break;
      }
      count++;
      if (stopIds.has(token)) {
        finishReason = 'stop';
        stopReason = token;
        break;
      }
      pending.push(token);
      decode(false);
      if (hitStopString || count >= req.maxTokens) break;
    }
    req.signal.throwIfAborted();
    if (!hitStopString) decode(true);
    if (!hitStopString) {
      const rest = matcher.flush();
      if (rest) {
        text += rest;
        req.onText?.(rest);
      }
    }
    return { text, completionTokens: count, finishReason, stopReason };
  }
}
