import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ApiError } from '../api/errors.js';
import type { ApiKeysRepo } from '../store/api-keys-repo.js';
import { createKeyAuthenticator } from './key-cache.js';
import { maskSecret } from './keys-admin.js';
import type { Principal } from './principal.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's key; null when no API keys are configured (open mode) or on a public route. */
    principal: Principal | null;
  }
  interface FastifyInstance {
    /** Every route registered after the auth plugin, with whether it needs a key. */
    routeTable(): readonly RouteEntry[];
  }
}

export interface RouteEntry {
  method: string;
  url: string;
  public: boolean;
}

/**
 * The only routes that answer without a key when keys are configured: the Kubernetes probes,
 * which say nothing about batches or files. Anything else, including routes added later and
 * unknown paths, needs a key. HEAD is the automatic twin of each GET.
 */
export const PUBLIC_ROUTES: readonly { method: string; url: string }[] = [
  { method: 'GET', url: '/healthz' },
  { method: 'GET', url: '/readyz' },
  // The dashboard's static page and assets (src/dashboard): no data in them; the page asks
  // for a key when its API calls answer 401 (a browser cannot add a header to a navigation).
  { method: 'GET', url: '/dashboard' },
  { method: 'GET', url: '/dashboard/:file' },
];

export function isPublicRoute(method: string, url: string | undefined): boolean {
  if (url === undefined) return false;
  const m = method === 'HEAD' ? 'GET' : method;
  return PUBLIC_ROUTES.some((r) => r.method === m && r.url === url);
}

export interface AuthOptions {
  keys: ApiKeysRepo;
  /**
   * Whether the server may run without keys (loopback HOST, or ALLOW_UNAUTHENTICATED). When
   * false and every key has been revoked, requests are refused instead of falling open.
   */
  allowOpen: boolean;
}

const BEARER_RE = /^Bearer[ \t]+(\S+)[ \t]*$/i;

function presentedKey(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  return BEARER_RE.exec(h)?.[1];
}

const CREATE_HINT = 'An operator creates keys with `npm run keys -- create --name NAME [--project P]`.';

function missingKey(): ApiError {
  return new ApiError(
    'invalid_api_key',
    `You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). ${CREATE_HINT}`,
  );
}

/**
 * Authentication for every route: an onRequest hook that sets `request.principal` or answers
 * 401 in OpenAI's envelope. Registered before any route (buildApp) so that nothing, not even a
 * route another part adds later, escapes it; the route walk in test/integration/auth-routes
 * proves it.
 */
async function authPlugin(app: FastifyInstance, opts: AuthOptions): Promise<void> {
  const authn = createKeyAuthenticator(opts.keys);
  const routes: RouteEntry[] = [];

  app.decorateRequest('principal', null);
  app.decorate('routeTable', () => routes);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url, public: isPublicRoute(method, r.url) });
  });

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    req.principal = null;
    if (isPublicRoute(req.method, req.routeOptions.url)) return;
    const secret = presentedKey(req);
    const auth = authn.authenticate(secret);
    if (auth.mode === 'open') {
      if (opts.allowOpen) return;
      // Every key was revoked while the server listens on a public interface: fail closed.
      throw new ApiError(
        'invalid_api_key',
        `This server has no active API keys and does not accept unauthenticated requests on this interface. ${CREATE_HINT}`,
      );
    }
    const r = auth.check;
    if (r === null || secret === undefined) throw missingKey();
    if (!r.ok) {
      req.log.info({ key: maskSecret(secret), reason: r.reason }, 'api key refused');
      const why = r.reason === 'revoked' ? 'This key was revoked.' : 'No such key.';
      throw new ApiError(
        'invalid_api_key',
        `Incorrect API key provided: ${maskSecret(secret)}. ${why} Check the key you use, or ask an operator for a new one. ${CREATE_HINT}`,
      );
    }
    req.principal = r.principal;
    // The key id (never the secret) on every later log line of this request, for auditing.
    req.log = reply.log = req.log.child({ keyId: r.principal.keyId, project: r.principal.project });
  });
}

export default fp(authPlugin, { name: 'batchwright-auth', fastify: '5.x' });

/**
 * For operator routes (/ops/*, /metrics, /health, the dashboard's data): throws 403
 * `admin_required` unless the caller's key is an admin key. In open mode (no keys) everyone
 * is the operator. Use in a handler, or as a route's `onRequest: adminOnly`.
 */
export function requireAdmin(req: FastifyRequest): void {
  const p = req.principal ?? null;
  if (!p || p.admin) return;
  throw new ApiError(
    'admin_required',
    `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]} is an operator route and needs an admin API key; key ${p.keyId} (project ${p.project}) is not one. An operator creates one with \`npm run keys -- create --name NAME --admin\`.`,
  );
}

export async function adminOnly(req: FastifyRequest): Promise<void> {
  requireAdmin(req);
}
