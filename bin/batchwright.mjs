#!/usr/bin/env node
// The installed `batchwright` command: runs the compiled CLI (dist/cli.js), as `npm run cli --`
// and `node dist/cli.js` do. dist/ is built first when it is missing or older than the source
// (scripts/ensure-built.sh, a few milliseconds when it is fresh).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ensure = fileURLToPath(new URL('../scripts/ensure-built.sh', import.meta.url));
const built = spawnSync('bash', [ensure], { stdio: ['ignore', 2, 2] });
if (built.error || built.status !== 0) {
  console.error(
    `batchwright: could not build dist/ (${built.error?.message ?? `exit ${built.status}`}); run \`npm run build\` in ${fileURLToPath(new URL('..', import.meta.url))}`,
  );
  process.exit(1);
}
const { runCli, exitWith } = await import('../dist/cli.js');
exitWith(await runCli(process.argv));
