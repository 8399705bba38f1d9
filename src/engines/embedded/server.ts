/** HTTP front of the embedded engine: vLLM's OpenAI surface on plain node:http. */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { EmbeddedConfig } from './config.js';
import { ApiError, badRequest, errorBody } from '../vllm-error-shape.js';
import type { GenResult, LlamaEngine } from './llama.js';
import {
  chatMessages,
  checkModel,
  completionPrompts,
  genParams,
  outputBudget,
  parseBody,
  type GenParams,
} from './requests.js';

const JSON_TYPE = 'application/json';
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' };
const MAX_BODY = 64 * 1024 * 1024;

function send(res: ServerResponse, status: number, body: string, type = JSON_TYPE): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, status: number, type: string, message: string): void {
  send(res, status, errorBody(status, type, message));
}

function readBody(req: IncomingMessage, res: ServerResponse): Promise<string | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        if (!res.headersSent) sendError(res, 413, 'BadRequestError', `Request body larger than ${MAX_BODY} bytes`);
        req.destroy();
        resolve(null);
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(size > MAX_BODY ? null : Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(null)); // client went away while sending
  });
}

type Kind = 'chat' | 'completion';

export interface EmbeddedServer {
  server: Server;
  /** Opens the inference endpoints (and /health) once the model is loaded. */
  setEngine(engine: LlamaEngine): void;
  stats(): { running: number; waiting: number; served: number; aborted: number };
}

export function createEmbeddedServer(cfg: EmbeddedConfig): EmbeddedServer {
  let engine: LlamaEngine | null = null;
  const counters = { served: 0, aborted: 0 };

  const modelsBody = () =>
    JSON.stringify({
      object: 'list',
      data: [
        {
          id: cfg.model,
          object: 'model',
          created: Math.floor(Date.now() / 1000),
          owned_by: 'vllm',
          root: cfg.model,
          parent: null,
          max_model_len: engine!.contextSize,
        },
      ],
    });

  const metricsText = () => {
    const l = `{model_name=${JSON.stringify(cfg.model)}}`;
    const metric = (name: string, type: string, help: string, value: number) =>
      `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name}${l} ${value.toFixed(1)}\n`;
    const pool = engine!.pool;
    return (
      metric('vllm:num_requests_running', 'gauge', 'Number of requests in model execution batches.', pool.running) +
      metric('vllm:num_requests_waiting', 'gauge', 'Number of requests waiting to be processed.', pool.waiting) +
      metric('vllm:prompt_tokens_total', 'counter', 'Number of prefill tokens processed.', engine!.promptTokensTotal) +
      metric(
        'vllm:generation_tokens_total',
        'counter',
        'Number of generation tokens processed.',
        engine!.generatedTokens,
      ) +
      metric('vllm:request_success_total', 'counter', 'Count of successfully processed requests.', counters.served)
    );
  };

  async function inference(kind: Kind, eng: LlamaEngine, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req, res);
    if (raw === null) return;
    let params: GenParams;
    let prompts: number[][];
    let budgets: number[];
    try {
      const body = parseBody(raw);
      checkModel(body, cfg.model);
      params = genParams(body, kind);
      prompts =
        kind === 'chat'
          ? [eng.chatTokens(chatMessages(body))]
          : completionPrompts(body).map((p) => eng.promptTokens(p));
      budgets = prompts.map((p) => outputBudget(eng.contextSize, p.length, params.maxTokens));
    } catch (e) {
      if (e instanceof ApiError) sendError(res, e.status, e.type, e.message);
      else sendError(res, 500, 'InternalServerError', String(e));
      return;
    }
    await new Generation(kind, eng, res, params, prompts, budgets).run();
  }

  /** One request: n choices per prompt, each on its own sequence; streamed or answered at the end. */
  class Generation {
    private readonly id: string;
    private readonly created = Math.floor(Date.now() / 1000);
    private readonly abort = new AbortController();
    private finished = false;

    constructor(
      private readonly kind: Kind,
      private readonly eng: LlamaEngine,
      private readonly res: ServerResponse,
      private readonly params: GenParams,
      private readonly prompts: number[][],
      private readonly budgets: number[],
    ) {
      this.id = (kind === 'chat' ? 'chatcmpl-' : 'cmpl-') + randomUUID().replace(/-/g, '');
    }

    private write(data: string): void {
      if (!this.res.destroyed) this.res.write(data);
    }

    async run(): Promise<void> {
      const { res, params } = this;
      res.on('error', () => {
        /* the client went away; 'close' aborts the generation */
      });
      res.on('close', () => {
        if (!this.finished) this.abort.abort(new Error('client disconnected'));
      });
      if (params.stream) {
        // Like vLLM, the headers go out at once, even while waiting for a sequence.
        res.writeHead(200, SSE_HEADERS);
        res.flushHeaders();
      }
      const jobs: Promise<GenResult>[] = [];
      this.prompts.forEach((tokens, p) => {
        for (let j = 0; j < params.n; j++) jobs.push(this.choice(tokens, this.budgets[p]!, p * params.n + j, j));
      });
      let results: GenResult[];
      try {
        results = await Promise.all(jobs);
      } catch (e) {
        if (this.abort.signal.aborted) {
          counters.aborted++; // the client went away: nobody to answer
          return;
        }
        this.abort.abort(e); // the other choices stop too
        const message = `generation failed: ${(e as Error).message}`;
        this.finished = true;
        if (params.stream) res.end(`data: ${errorBody(500, 'InternalServerError', message)}\n\ndata: [DONE]\n\n`);
        else sendError(res, 500, 'InternalServerError', message);
        return;
      }
      this.finished = true;
      const promptTokens = this.prompts.reduce((s, p) => s + p.length, 0);
      const completionTokens = results.reduce((s, r) => s + r.completionTokens, 0);
      const usage = {
        prompt_tokens: promptTokens,
        completion_tokens: completionTokens,
        total_tokens: promptTokens + completionTokens,
      };
      counters.served++;
      if (params.stream) {
        res.end((params.includeUsage ? this.chunk([], usage) : '') + 'data: [DONE]\n\n');
        return;
      }
      const choices = results.map((r, index) =>
        this.kind === 'chat'
          ? {
              index,
              message: { role: 'assistant', content: r.text },
              logprobs: null,
              finish_reason: r.finishReason,
              stop_reason: r.stopReason,
            }
          : { index, text: r.text, logprobs: null, finish_reason: r.finishReason, stop_reason: r.stopReason },
      );
      send(
        res,
        200,
        JSON.stringify({
          id: this.id,
          object: this.kind === 'chat' ? 'chat.completion' : 'text_completion',
          created: this.created,
          model: cfg.model,
          choices,
          usage,
        }),
      );
    }

    private async choice(tokens: number[], budget: number, index: number, j: number): Promise<GenResult> {
      const { params } = this;
      const stream = params.stream;
      const chat = this.kind === 'chat';
      if (stream && chat)
        this.write(
          this.chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]),
        );
      const piece = (text: string, fr: string | null = null, sr: string | number | null = null) =>
        this.chunk([
          chat
            ? { index, delta: { content: text }, logprobs: null, finish_reason: fr, stop_reason: sr }
            : { index, text, logprobs: null, finish_reason: fr, stop_reason: sr },
        ]);
      const seed = params.sampling.seed;
      const r = await this.eng.generate({
        tokens,
        maxTokens: budget,
        sampling: seed === undefined ? params.sampling : { ...params.sampling, seed: (seed + j) % 2 ** 32 },
        stop: params.stop,
        includeStop: params.includeStop,
        stopTokenIds: params.stopTokenIds,
        ignoreEos: params.ignoreEos,
        ...(chat && { templateStops: this.eng.chatStops }),
        signal: this.abort.signal,
        ...(stream && { onText: (text: string) => this.write(piece(text)) }),
      });
      if (stream) this.write(piece('', r.finishReason, r.stopReason));
      return r;
    }

    private chunk(choices: unknown[], usage?: unknown): string {
      const obj: Record<string, unknown> = {
        id: this.id,
        object: this.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
        created: this.created,
        model: cfg.model,
        choices,
      };
      if (usage) obj.usage = usage;
      return `data: ${JSON.stringify(obj)}\n\n`;
    }
  }

  const server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 0 }, (req, res) => {
    let path = req.url ?? '/';
    const q = path.indexOf('?');
    if (q !== -1) path = path.slice(0, q);
    const method = req.method;
    if (!engine) {
      sendError(res, 503, 'ServiceUnavailableError', 'The model is still loading.');
      return;
    }
    const eng = engine;
    const post = method === 'POST';
    const get = method === 'GET' || method === 'HEAD';
    const fail = (e: unknown) => {
      if (!res.headersSent) sendError(res, 500, 'InternalServerError', String(e));
      else res.destroy();
    };
    switch (path) {
      case '/v1/chat/completions':
        if (post) return void inference('chat', eng, req, res).catch(fail);
        break;
      case '/v1/completions':
        if (post) return void inference('completion', eng, req, res).catch(fail);
        break;
      case '/v1/embeddings':
        if (post) {
          req.resume();
          const e = badRequest('embeddings not supported by this engine');
          return sendError(res, e.status, e.type, e.message);
        }
        break;
      case '/health':
      case '/ping':
        if (get || post) return send(res, 200, '');
        break;
      case '/v1/models':
        if (get) return send(res, 200, modelsBody());
        break;
      case '/metrics':
        if (get) return send(res, 200, metricsText(), 'text/plain; version=0.0.4; charset=utf-8');
        break;
      case '/version':
        if (get) return send(res, 200, '{"version":"embedded"}');
        break;
      default:
        return sendError(res, 404, 'NotFoundError', `Not Found: ${method} ${path}`);
    }
    sendError(res, 405, 'MethodNotAllowed', `Method Not Allowed: ${method} ${path}`);
  });
  server.maxRequestsPerSocket = 0;

  return {
    server,
    setEngine(e) {
      engine = e;
    },
    stats: () => ({ running: engine?.pool.running ?? 0, waiting: engine?.pool.waiting ?? 0, ...counters }),
  };
}
