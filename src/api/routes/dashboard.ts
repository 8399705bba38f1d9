import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ROOT as REPO_ROOT } from '../../paths.js';
import { ApiError } from '../errors.js';

/**
 * The dashboard's static files (src/dashboard): plain HTML, CSS and ES modules, no build step;
 * read from the source tree by the compiled server too (they are not copied into dist/).
 */
const ROOT = path.join(REPO_ROOT, 'src/dashboard');
const NAME_RE = /^[a-z0-9-]+\.(html|css|js|svg)$/;
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  svg: 'image/svg+xml',
};
// Everything the page loads comes from this server; inline scripts and other origins are refused.
const CSP =
  "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/**
 * Serves the dashboard at /dashboard/. The page itself needs no key: it holds no data, and asks
 * for a key only when an API call it makes answers 401.
 */
export default async function dashboardRoutes(app: FastifyInstance): Promise<void> {
  const send = async (name: string, reply: import('fastify').FastifyReply) => {
    if (!NAME_RE.test(name))
      throw new ApiError('route_not_found', `No dashboard file ${name.slice(0, 100)}. Open /dashboard/.`);
    let bytes: Buffer;
    try {
      bytes = await readFile(path.join(ROOT, name));
    } catch {
      throw new ApiError('route_not_found', `No dashboard file ${name}. Open /dashboard/.`);
    }
    return reply
      .header('content-type', TYPES[name.split('.').pop()!]!)
      .header('cache-control', 'no-cache')
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .send(bytes);
  };
  // ignoreTrailingSlash: /dashboard and /dashboard/ are the same route; relative asset URLs
  // in index.html need the slash, so the bare path redirects.
  app.get('/dashboard', async (req, reply) =>
    req.url.split('?')[0]!.endsWith('/') ? send('index.html', reply) : reply.redirect('/dashboard/'),
  );
  app.get<{ Params: { file: string } }>('/dashboard/:file', async (req, reply) => send(req.params.file, reply));
}
