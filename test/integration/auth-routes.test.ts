import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeKey } from '../../src/auth/keys-admin.js';
import { PUBLIC_ROUTES } from '../../src/auth/plugin.js';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { addKey, type ErrorEnvelope } from '../helpers/auth.js';

let server: TestServer;
let valid: string;
let revoked: string;
let projectKey: string;

beforeAll(async () => {
  server = await startTestServer();
  valid = addKey(server, { name: 'admin', admin: true });
  projectKey = addKey(server, { name: 'p', project: 'p' });
  revoked = addKey(server, { name: 'old', project: 'p' });
  revokeKey(server.app.deps.db, findId(server, 'old'));
});
afterAll(async () => {
  await server?.close();
});

function findId(s: TestServer, name: string): string {
  const row = s.app.deps.db.$client.prepare('SELECT id FROM api_keys WHERE name = ?').get(name) as { id: string };
  return row.id;
}

/** Every method + path in Fastify's own printout of the router (an independent view of the route table). */
function printedRoutes(app: FastifyInstance): Set<string> {
  const out = new Set<string>();
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack[depth] = (depth > 0 ? stack[depth - 1]! : '') + m[2]!;
    stack.length = depth + 1;
    for (const method of m[3]?.split(', ') ?? []) out.add(`${method} ${stack[depth]}`);
  }
  return out;
}

/** A concrete URL for a route pattern: each :param (with or without a regex) and * becomes a plausible value. */
function concrete(url: string): string {
  return url.replace(/:[A-Za-z0-9_]+(\([^)]*\))?/g, 'x1').replace(/\*/g, 'x1');
}

const isPublic = (method: string, url: string) =>
  PUBLIC_ROUTES.some((r) => r.url === url && (r.method === method || (method === 'HEAD' && r.method === 'GET')));

describe('authentication covers the whole route table', () => {
  it('sees every route Fastify has (the table the walk uses is complete)', () => {
    // printRoutes writes a wildcard child of /v1/models/ as "/v1/models*".
    const table = new Set(server.app.routeTable().map((r) => `${r.method} ${r.url.replace(/\/\*$/, '*')}`));
    const printed = printedRoutes(server.app);
    // The parser works: it finds routes of several modules.
    for (const r of [
      'GET /healthz',
      'POST /v1/files',
      'GET /v1/files/:id/content',
      'POST /v1/batches/:id/cancel',
      'POST /v1/chat/completions',
      'GET /v1/models',
    ])
      expect(printed).toContain(r);
    expect([...printed].filter((r) => !table.has(r))).toEqual([]);
    expect(table.size).toBe(printed.size);
  });

  it('marks exactly the allowlist as public, the probes among them', () => {
    const pub = server.app
      .routeTable()
      .filter((r) => r.public)
      .map((r) => `${r.method} ${r.url}`)
      .sort();
    const allow = PUBLIC_ROUTES.flatMap((r) => [
      `${r.method} ${r.url}`,
      ...(r.method === 'GET' ? [`HEAD ${r.url}`] : []),
    ]).sort();
    expect(pub).toEqual(allow);
    for (const probe of ['GET /healthz', 'GET /readyz']) expect(pub).toContain(probe);
    // Nothing under /v1 or /ops is ever public.
    expect(pub.filter((r) => / \/(v1|ops)\b/.test(r))).toEqual([]);
  });

  it('answers 401 invalid_api_key on every other route, with no key and with a revoked key', async () => {
    const routes = server.app.routeTable();
    expect(routes.length).toBeGreaterThan(15);
    const failures: string[] = [];
    for (const r of routes) {
      const url = concrete(r.url);
      for (const [label, headers] of [
        ['no key', {}],
        ['revoked key', { authorization: `Bearer ${revoked}` }],
        ['unknown key', { authorization: 'Bearer bw-thisisnotakeythisisnotakeythisisnotakey00' }],
        ['not bearer', { authorization: `Basic ${Buffer.from(`:${valid}`).toString('base64')}` }],
      ] as const) {
        const res = await server.app.inject({ method: r.method as 'GET', url, headers });
        if (isPublic(r.method, r.url)) {
          if (res.statusCode === 401) failures.push(`${r.method} ${url} (${label}): public route answered 401`);
          continue;
        }
        if (res.statusCode !== 401) {
          failures.push(`${r.method} ${url} (${label}): ${res.statusCode}`);
          continue;
        }
        if (r.method === 'HEAD') continue; // no body
        const body = res.json<ErrorEnvelope>();
        if (body.error?.code !== 'invalid_api_key' || body.error.type !== 'invalid_request_error')
          failures.push(`${r.method} ${url} (${label}): ${res.body}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('answers 401 on unknown paths too, so they reveal nothing', async () => {
    const res = await server.app.inject({ method: 'GET', url: '/v1/nothing-here' });
    expect(res.statusCode).toBe(401);
    const ok = await server.app.inject({
      method: 'GET',
      url: '/v1/nothing-here',
      headers: { authorization: `Bearer ${valid}` },
    });
    expect(ok.statusCode).toBe(404);
  });

  it("says what is missing, in OpenAI's words, and shows only a masked key", async () => {
    const none = (await server.app.inject({ method: 'GET', url: '/v1/files' })).json<ErrorEnvelope>();
    expect(none.error.message).toMatch(/^You didn't provide an API key\./);
    expect(none.error.message).toContain('npm run keys -- create');
    expect(none.error.param).toBeNull();

    const bad = `bw-${'Q'.repeat(40)}zz`;
    const wrong = (
      await server.app.inject({ method: 'GET', url: '/v1/files', headers: { authorization: `Bearer ${bad}` } })
    ).json<ErrorEnvelope>();
    expect(wrong.error.message).toMatch(/^Incorrect API key provided: bw-QQ…zz\./);
    expect(wrong.error.message).not.toContain(bad);

    const rev = (
      await server.app.inject({ method: 'GET', url: '/v1/files', headers: { authorization: `Bearer ${revoked}` } })
    ).json<ErrorEnvelope>();
    expect(rev.error.message).toContain('revoked');
    expect(rev.error.message).not.toContain(revoked);
  });

  it('lets a valid key through, and the probes answer with no key at all', async () => {
    expect(
      (await server.app.inject({ method: 'GET', url: '/v1/files', headers: { authorization: `Bearer ${valid}` } }))
        .statusCode,
    ).toBe(200);
    expect(
      (
        await server.app.inject({
          method: 'GET',
          url: '/v1/files',
          headers: { authorization: `bearer  ${projectKey}` },
        })
      ).statusCode,
    ).toBe(200);
    expect((await server.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    // 200 or 503 (readiness depends on Redis and SQLite, not on auth), never 401.
    expect([200, 503]).toContain((await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode);
  });

  // The dashboard's results views (src/api/routes/ops-results.ts) scope what they show to the
  // key's project (canSee) instead of needing an admin key.
  const PROJECT_SCOPED_OPS = [
    '/ops/batches/:id/results',
    '/ops/compare',
    '/ops/stars/export',
    '/ops/batches/:id/stars/:customId',
  ];

  it('keeps operator routes for admin keys: a project key gets 403 admin_required on /metrics, /health and every other /ops route', async () => {
    const operator = server.app
      .routeTable()
      .filter(
        (r) =>
          r.method === 'GET' &&
          (r.url === '/metrics' || r.url === '/health' || r.url.startsWith('/ops/')) &&
          !PROJECT_SCOPED_OPS.includes(r.url),
      );
    expect(operator.length).toBeGreaterThan(3);
    const failures: string[] = [];
    for (const r of operator) {
      const res = await server.app.inject({
        method: 'GET',
        url: concrete(r.url),
        headers: { authorization: `Bearer ${projectKey}` },
      });
      const body = res.statusCode === 403 ? res.json<ErrorEnvelope>() : undefined;
      if (res.statusCode !== 403 || body?.error.code !== 'admin_required')
        failures.push(`GET ${r.url}: ${res.statusCode} ${res.body.slice(0, 200)}`);
    }
    expect(failures).toEqual([]);
    const admin = await server.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${valid}` },
    });
    expect(admin.statusCode).toBe(200);
  });
});
