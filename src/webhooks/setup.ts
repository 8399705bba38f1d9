import type { Config } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import type { BatchesRepo } from '../store/batches-repo.js';
import type { Db } from '../store/db.js';
import { createWebhookDeliveriesRepo } from '../store/webhook-deliveries-repo.js';
import { loadWebhookSecret } from './secret.js';
import { checkWebhookUrl, parseAllowList } from './ssrf.js';
import { createWebhooks, type Webhooks } from './webhooks.js';

/**
 * Wires webhooks from the config: the signing secret (generated under DATA_DIR if unset),
 * the allow-list, and WEBHOOK_URL checked by the same guard as a client's URL. Throws with a
 * readable message on a bad setting (main prints it and exits).
 */
export function setupWebhooks(config: Config, db: Db, batches: BatchesRepo, log: Logger): Webhooks {
  const env = config.env;
  const allow = parseAllowList(env.WEBHOOK_ALLOW_HOSTS);
  if (env.WEBHOOK_URL) {
    const r = checkWebhookUrl(env.WEBHOOK_URL, allow);
    if (!r.ok)
      throw new Error(
        `WEBHOOK_URL is refused by the SSRF guard: ${r.reason}. List its host in WEBHOOK_ALLOW_HOSTS if it is an internal receiver.`,
      );
  }
  return createWebhooks({
    batches,
    deliveries: createWebhookDeliveriesRepo(db),
    log,
    options: {
      serverUrl: env.WEBHOOK_URL,
      secret: loadWebhookSecret(env.WEBHOOK_SECRET, config.dataDir, log),
      allow,
      retryBaseMs: env.WEBHOOK_RETRY_BASE_MS,
      maxAttempts: env.WEBHOOK_MAX_ATTEMPTS,
      timeoutMs: env.WEBHOOK_TIMEOUT_MS,
    },
  });
}
