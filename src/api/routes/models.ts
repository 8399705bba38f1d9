import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import type { ModelConfig } from '../../config/models.js';

const created = Math.floor(Date.now() / 1000);

function toModelObject(m: ModelConfig) {
  return {
    id: m.id,
    object: 'model' as const,
    created,
    owned_by: m.owned_by,
    engine: m.engine,
    max_model_len: m.options.max_model_len ?? null,
    description: m.description ?? null,
  };
}

export default async function modelsRoutes(app: FastifyInstance) {
  const models = app.deps.config.models;
  app.get('/models', async () => ({ object: 'list', data: models.map(toModelObject) }));
  app.get<{ Params: { id: string } }>('/models/*', async (req) => {
    const id = (req.params as Record<string, string>)['*'] ?? '';
    const m = models.find((x) => x.id === id);
    if (!m) throw new ApiError('model_not_found', `The model '${id}' does not exist on this server. See GET /v1/models for the models in models.yaml.`, 'model');
    return toModelObject(m);
  });
}
