#!/usr/bin/env node
// The installed `batchwright` command: loads the TypeScript CLI through tsx (a dependency),
// as `npm run cli --` and `node --import tsx src/cli/main.ts` do from the repository.
import { register } from 'tsx/esm/api';

register();
const { runCli, exitWith } = await import('../src/cli/main.ts');
exitWith(await runCli(process.argv));
