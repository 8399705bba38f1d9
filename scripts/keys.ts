/**
 * API key admin: `npm run keys -- create --name ci [--project p] [--admin] | list [--json] | revoke <id-or-prefix>`.
 * Opens $DATA_DIR/db.sqlite directly (safe while the server runs: SQLite WAL; the server
 * notices new and revoked keys on its next request).
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { ConfigError, parseEnv } from '../src/config/load.js';
import { openDb, type Db } from '../src/store/db.js';
import { createKey, KeyAdminError, listKeys, revokeKey, type KeyInfo } from '../src/auth/keys-admin.js';

const iso = (s: number | null) => (s === null ? '-' : new Date(s * 1000).toISOString().replace(/\.\d+Z$/, 'Z'));

export function formatKeyTable(keys: readonly KeyInfo[]): string {
  const head = ['ID', 'NAME', 'PROJECT', 'PREFIX', 'ADMIN', 'CREATED', 'LAST USED', 'REVOKED'];
  const rows = keys.map((k) => [
    k.id,
    k.name,
    k.project,
    `${k.prefix}…`,
    k.admin ? 'yes' : 'no',
    iso(k.createdAt),
    iso(k.lastUsedAt),
    iso(k.revokedAt),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function program(open: () => Db): Command {
  const cmd = new Command('keys')
    .description('Create, list and revoke API keys of this batchwright server (DATA_DIR).')
    .exitOverride();
  cmd
    .command('create')
    .description('Create a key; prints its secret once (only a hash is stored).')
    .requiredOption('--name <name>', 'what uses the key, e.g. ci')
    .option('--project <project>', "the project whose files and batches the key sees (default: the key's own id)")
    .option('--admin', 'operator key: every project, /ops, /metrics and the dashboard', false)
    .action((o: { name: string; project?: string; admin: boolean }) => {
      const { key, secret } = createKey(open(), {
        name: o.name,
        ...(o.project !== undefined && { project: o.project }),
        admin: o.admin,
      });
      console.log(JSON.stringify({ ...key, secret }, null, 2));
      console.error('Store the secret now: it is not shown again. Use it as: Authorization: Bearer <secret>');
    });
  cmd
    .command('list')
    .description('List keys (never their secrets).')
    .option('--json', 'print JSON instead of a table', false)
    .action((o: { json: boolean }) => {
      const keys = listKeys(open());
      console.log(
        o.json
          ? JSON.stringify(keys, null, 2)
          : keys.length
            ? formatKeyTable(keys)
            : 'No API keys: the server runs in open mode (loopback only).',
      );
    });
  cmd
    .command('revoke')
    .description('Revoke a key by id or display prefix; the server refuses it from its next request.')
    .argument('<id>', 'key id (key_…) or its prefix (bw-…)')
    .action((id: string) => {
      console.log(JSON.stringify(revokeKey(open(), id), null, 2));
    });
  return cmd;
}

async function main(): Promise<void> {
  let db: Db | undefined;
  const open = () => {
    if (!db) {
      const env = parseEnv(process.env);
      db = openDb(path.join(env.DATA_DIR, 'db.sqlite'));
    }
    return db;
  };
  try {
    await program(open).parseAsync(process.argv);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.help' || code === 'commander.version')
      process.exitCode = 0;
    else if (code?.startsWith('commander.')) process.exitCode = 2;
    else if (e instanceof KeyAdminError || e instanceof ConfigError) {
      console.error(e.message);
      process.exitCode = 1;
    } else throw e;
  } finally {
    db?.$client.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) void main();
