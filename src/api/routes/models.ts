import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import type { ModelConfig } from '../../config/models.js';
import type { WorkerHeartbeat } from '../../queue/jobs.js';

const created = Math.floor(Date.now() / 1000);

export type ModelState = 'unloaded' | 'loading' | 'ready' | 'sleeping' | 'failed';

/** The best state any worker reports for the model: ready > loading > failed > unloaded. */
export function modelState(model: string, heartbeats: readonly WorkerHeartbeat[]): ModelState {
  const states = heartbeats.flatMap((hb) => hb.engines.filter((e) => e.model === model).map((e) => e.state));
  if (states.includes('ready')) return 'ready';
  if (states.includes('sleeping')) return 'sleeping';
  if (states.includes('starting')) return 'loading';
  if (states.includes('failed')) return 'failed';
  return 'unloaded';
}

/**
 * One line about a model launched as a SLURM/PBS job (job state, queue position, start
 * estimate, free GPUs, monitoring URL), from the worker whose engine is furthest along.
 */
export function modelDetail(model: string, heartbeats: readonly WorkerHeartbeat[]): string | null {
  const rank = (s: string) => ['ready', 'starting', 'failed', 'stopping', 'stopped'].indexOf(s);
  const engines = heartbeats.flatMap((hb) => hb.engines.filter((e) => e.model === model && e.detail?.text));
  engines.sort((a, b) => rank(a.state) - rank(b.state));
  return engines[0]?.detail?.text ?? null;
}

function toModelObject(m: ModelConfig, heartbeats: readonly WorkerHeartbeat[]) {
  return {
    id: m.id,
    object: 'model' as const,
    created,
    owned_by: m.owned_by,
    engine: m.engine,
    state: modelState(m.id, heartbeats),
    max_model_len: m.options.max_model_len ?? null,
    description: m.description ?? null,
    launcher: typeof m.launcher === 'object' ? m.launcher.kind : 'local',
    detail: modelDetail(m.id, heartbeats),
  };
}

export default async function modelsRoutes(app: FastifyInstance) {
  const models = app.deps.config.models;
  const router = app.deps.router;
  app.get('/models', async () => ({ object: 'list', data: models.map((m) => toModelObject(m, router.heartbeats())) }));
  // Model ids contain '/' (google/gemma-3-12b-it), hence the wildcard.
  app.get('/models/*', async (req) => {
    const id = (req.params as Record<string, string>)['*'] ?? '';
    const m = models.find((x) => x.id === id);
    if (!m)
      throw new ApiError(
        'model_not_found',
        `The model '${id.length > 100 ? `${id.slice(0, 100)}…` : id}' does not exist on this server. See GET /v1/models for the models in models.yaml.`,
        'model',
      );
    return toModelObject(m, router.heartbeats());
  });
}
