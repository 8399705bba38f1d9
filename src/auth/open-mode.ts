import ipaddr from 'ipaddr.js';
import { createApiKeysRepo, type ApiKeysRepo } from '../store/api-keys-repo.js';
import { openDb } from '../store/db.js';

/** The server would accept anyone on the network: it has no API keys and HOST is not loopback. */
export class UnauthenticatedListenError extends Error {
  override name = 'UnauthenticatedListenError';
}

/** 127.0.0.0/8, ::1 (and ::ffff:127.x), or the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h.toLowerCase() === 'localhost') return true;
  if (!ipaddr.isValid(h)) return false;
  const addr = ipaddr.process(h);
  return addr.range() === 'loopback';
}

/** Whether requests without a key may be served: only on loopback, unless the operator opts in. */
export function openModeAllowed(host: string, allowUnauthenticated: boolean): boolean {
  return allowUnauthenticated || isLoopbackHost(host);
}

/** Called before listen: refuses open mode on a non-loopback interface. The message is one line. */
export function assertListenAllowed(
  host: string,
  allowUnauthenticated: boolean,
  keys: Pick<ApiKeysRepo, 'hasActive'>,
): void {
  if (openModeAllowed(host, allowUnauthenticated) || keys.hasActive()) return;
  throw new UnauthenticatedListenError(
    `refusing to listen on HOST=${host} with no API keys: anyone who can reach it could use it. Create a key first (npm run keys -- create --name NAME), or set ALLOW_UNAUTHENTICATED=1 to run open on purpose.`,
  );
}

/**
 * The same check, for `main.ts` to run before it starts anything else (a private Redis, a
 * worker): opens the database only to look for keys.
 */
export function assertListenAllowedIn(dbFile: string, host: string, allowUnauthenticated: boolean): void {
  if (openModeAllowed(host, allowUnauthenticated)) return;
  const db = openDb(dbFile);
  try {
    assertListenAllowed(host, allowUnauthenticated, createApiKeysRepo(db));
  } finally {
    db.$client.close();
  }
}
