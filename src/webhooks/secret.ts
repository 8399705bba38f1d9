import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log/logger.js';

export const SECRET_FILE = 'webhook-secret';
const SECRET_RE = /^whsec_[A-Za-z0-9+/]+={0,2}$/;

/** A Standard Webhooks secret: `whsec_` + base64 of at least 24 random bytes. */
export function isValidWebhookSecret(s: string): boolean {
  return SECRET_RE.test(s) && Buffer.from(s.slice(6), 'base64').length >= 24;
}

/**
 * The signing secret: WEBHOOK_SECRET if set, else the one kept in DATA_DIR/webhook-secret,
 * generated (32 random bytes, file mode 0600) on first start. Receivers verify with it, so it
 * must stay the same across restarts. Logs where it is, never the secret.
 */
export function loadWebhookSecret(fromEnv: string | undefined, dataDir: string, log: Logger): string {
  if (fromEnv) {
    if (!isValidWebhookSecret(fromEnv))
      throw new Error('WEBHOOK_SECRET must be "whsec_" followed by the base64 of at least 24 bytes');
    return fromEnv;
  }
  const file = path.join(dataDir, SECRET_FILE);
  try {
    const s = readFileSync(file, 'utf8').trim();
    if (!isValidWebhookSecret(s))
      throw new Error(`${file} does not hold a webhook secret ("whsec_" + base64); delete it to generate a new one`);
    log.info({ file }, 'webhook signing secret loaded from file');
    return s;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  mkdirSync(dataDir, { recursive: true });
  // 'wx': never overwrite a secret another process wrote meanwhile.
  writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  log.info({ file }, 'webhook signing secret generated; give receivers the secret in this file');
  return secret;
}
