import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis-server.js';

let server: TestServer | undefined;
let redis: TestRedis | undefined;
afterEach(async () => {
  await server?.close().catch(() => undefined);
  await redis?.stop();
  server = redis = undefined;
});

describe('health probes', () => {
  it('/healthz answers while /readyz follows Redis: 503 with the reason when it is down, 200 again when it is back', async () => {
    redis = await startRedis();
    server = await startTestServer({ env: { REDIS_URL: redis.url } });
    const get = async (p: string) => {
      const res = await fetch(`${server!.baseUrl}${p}`);
      return { status: res.status, body: (await res.json()) as Record<string, any> };
    };
    expect(await get('/healthz')).toEqual({ status: 200, body: { status: 'ok' } });
    expect(await get('/readyz')).toEqual({
      status: 200,
      body: { status: 'ready', checks: { sqlite: 'ok', redis: 'ok' } },
    });

    const port = redis.port;
    await redis.stop();
    const down = await get('/readyz');
    expect(down.status).toBe(503);
    expect(down.body.checks.sqlite).toBe('ok');
    expect(down.body.checks.redis).toMatch(/redis/);
    expect((await get('/healthz')).status).toBe(200);

    redis = await startRedis({ port });
    const deadline = Date.now() + 15_000;
    while ((await get('/readyz')).status !== 200) {
      if (Date.now() > deadline) throw new Error('readyz did not recover');
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});
