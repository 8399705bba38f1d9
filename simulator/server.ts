/** HTTP front of the simulator: routing, body reading, errors. Plain node:http for speed. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { SimConfig } from './config.js';
import { ApiError, errorBody } from '../src/engines/vllm-error-shape.js';
import { Job } from './job.js';
import {
  checkModel,
  parseBody,
  planChat,
  planCompletion,
  planEmbedding,
  type EmbedPlan,
  type GenPlan,
} from './requests.js';
import { SimState } from './state.js';

const JSON_TYPE = 'application/json';
const MAX_BODY = 64 * 1024 * 1024;

function send(res: ServerResponse, status: number, body: string, type = JSON_TYPE): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, status: number, type: string, message: string): void {
  send(res, status, errorBody(status, type, message));
}

function readBody(req: IncomingMessage, res: ServerResponse, cb: (raw: string) => void): void {
  let first: Buffer | undefined;
  let rest: Buffer[] | undefined;
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size > MAX_BODY) {
      if (!res.headersSent) sendError(res, 413, 'BadRequestError', `Request body larger than ${MAX_BODY} bytes`);
      req.destroy();
      return;
    }
    if (!first) first = c;
    else (rest ??= [first]).push(c);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return;
    cb(rest ? Buffer.concat(rest).toString('utf8') : first ? first.toString('utf8') : '');
  });
  req.on('error', () => {
    /* client went away while sending; nothing to answer */
  });
}

type Kind = 'chat' | 'completion' | 'embedding';

export interface SimServer {
  server: Server;
  state: SimState;
  /** Opens every endpoint (called once --startup-ms has passed). */
  markReady(ms: number): void;
}

export function createSimServer(cfg: SimConfig): SimServer {
  const state = new SimState(cfg);
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
          max_model_len: cfg.maxModelLen,
        },
      ],
    });

  function inference(kind: Kind, req: IncomingMessage, res: ServerResponse): void {
    state.arrived++;
    if (cfg.crashAfter > 0 && state.arrived > cfg.crashAfter) {
      process.stderr.write(`simulator: --crash-after ${cfg.crashAfter} reached, exiting with code 1\n`);
      process.exit(1);
    }
    readBody(req, res, (raw) => {
      let plan: GenPlan | EmbedPlan;
      try {
        const body = parseBody(raw);
        checkModel(body, cfg.model);
        plan =
          kind === 'chat'
            ? planChat(body, cfg)
            : kind === 'completion'
              ? planCompletion(body, cfg)
              : planEmbedding(body, cfg);
      } catch (e) {
        state.rejected++;
        if (e instanceof ApiError) sendError(res, e.status, e.type, e.message);
        else sendError(res, 500, 'InternalServerError', String(e));
        return;
      }
      if (cfg.errorRate > 0 && state.rng() < cfg.errorRate) {
        state.errors++;
        sendError(res, 500, 'InternalServerError', 'Simulated engine failure (--error-rate)');
        return;
      }
      new Job(state, res, plan);
    });
  }

  const server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 0 }, (req, res) => {
    let path = req.url ?? '/';
    const q = path.indexOf('?');
    if (q !== -1) path = path.slice(0, q);
    const method = req.method;
    if (!state.ready) {
      sendError(res, 503, 'ServiceUnavailableError', 'The model is still loading (--startup-ms).');
      return;
    }
    const post = method === 'POST';
    const get = method === 'GET' || method === 'HEAD';
    switch (path) {
      case '/v1/chat/completions':
        if (post) return inference('chat', req, res);
        break;
      case '/v1/completions':
        if (post) return inference('completion', req, res);
        break;
      case '/v1/embeddings':
        if (post) return inference('embedding', req, res);
        break;
      case '/health':
      case '/ping':
        if (get || post) return send(res, 200, '');
        break;
      case '/v1/models':
        if (get) return send(res, 200, modelsBody());
        break;
      case '/metrics':
        if (get) return send(res, 200, state.metricsText(), 'text/plain; version=0.0.4; charset=utf-8');
        break;
      case '/version':
        if (get) return send(res, 200, '{"version":"sim"}');
        break;
      case '/sim/stats':
        if (get) return send(res, 200, state.statsJson());
        break;
      case '/sim/reset':
        if (post) {
          state.reset();
          return send(res, 200, state.statsJson());
        }
        break;
      default:
        return sendError(res, 404, 'NotFoundError', `Not Found: ${method} ${path}`);
    }
    sendError(res, 405, 'MethodNotAllowed', `Method Not Allowed: ${method} ${path}`);
  });
  server.maxRequestsPerSocket = 0;

  return {
    server,
    state,
    markReady(ms: number) {
      state.ready = true;
      state.readyAtMs = ms;
    },
  };
}
