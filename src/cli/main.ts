/**
 * batchwright: the command line for a batchwright (or any OpenAI-compatible) server.
 * Exit codes are in errors.ts (EXIT) and docs/cli.md. Progress and messages go to stderr;
 * what a script consumes (ids, tables, file paths) goes to stdout.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { makeClient, parsePositiveInt, readCliEnv } from './client.js';
import { cancel, download, list, submit, watch, type Ctx, type WatchFlags } from './commands/batches.js';
import { keysCreate, keysList, keysRevoke } from './commands/keys.js';
import { exportStarred, logs, models } from './commands/ops.js';
import { EXIT, explain } from './errors.js';

const collect = (v: string, prev: string[]) => [...prev, v];

// commander passes each action its options untyped: each action names the shape its command's options parse to.
export function buildProgram(ctx: () => Ctx, setExit: (p: Promise<number>) => Promise<void>): Command {
  const program = new Command('batchwright')
    .description('Submit, watch and download batches on a batchwright server (OPENAI_BASE_URL, OPENAI_API_KEY).')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const interval = () =>
    new Option('--interval <ms>', 'poll period in milliseconds')
      .default(1000)
      .argParser(parsePositiveInt('--interval'));

  program
    .command('submit')
    .description('upload a JSONL file of requests, create a batch, watch it and download its results')
    .argument('<file>', 'JSONL file, one request per line')
    .option('--endpoint <path>', "batch endpoint (default: the first line's url, else /v1/chat/completions)")
    .option('--metadata <key=value>', 'batch metadata (repeatable)', collect, [])
    .option('--no-watch', 'print the batch id and exit once the batch is created')
    .option('--out <dir>', 'where to write <batch>_output.jsonl and <batch>_error.jsonl', '.')
    .addOption(interval())
    .action((file: string, o: Parameters<typeof submit>[2]) => setExit(submit(ctx(), file, o)));

  program
    .command('watch')
    .description('follow a batch until it ends: progress, throughput, ETA and why it waits')
    .argument('<batch_id>')
    .option('--download', 'download its output and error files when it ends')
    .option('--out <dir>', 'with --download: where to write the files', '.')
    .addOption(interval())
    .action((id: string, o: WatchFlags & { download?: boolean }) =>
      setExit(watch(ctx(), id, { ...o, download: Boolean(o.download) })),
    );

  program
    .command('download')
    .description("write a finished batch's output and error files")
    .argument('<batch_id>')
    .option('--out <dir>', 'target directory', '.')
    .action((id: string, o: { out: string }) => setExit(download(ctx(), id, o.out)));

  program
    .command('list')
    .description('the newest batches')
    .option('--limit <n>', 'how many (1-100)', parsePositiveInt('--limit'), 20)
    .action((o: { limit: number }) => setExit(list(ctx(), o.limit)));

  program
    .command('cancel')
    .description('cancel a batch (results so far are kept)')
    .argument('<batch_id>')
    .action((id: string) => setExit(cancel(ctx(), id)));

  program
    .command('models')
    .description("the server's models and their state (unloaded, loading, ready, sleeping, failed)")
    .action(() => setExit(models(ctx())));

  program
    .command('logs')
    .description("an engine's log, from the operator API (admin key when keys are on)")
    .argument('<worker_id>')
    .argument('<model>')
    .option('-f, --follow', 'keep printing new lines until Ctrl-C')
    .option('--tail <n>', 'lines of backlog', parsePositiveInt('--tail'), 100)
    .action((w: string, m: string, o: { follow?: boolean; tail: number }) =>
      setExit(logs(ctx(), w, m, { follow: Boolean(o.follow), tail: o.tail })),
    );

  const dataDir = () =>
    new Option('--data-dir <dir>', "the server's DATA_DIR").default(
      process.env.DATA_DIR?.trim() || './data',
      '$DATA_DIR or ./data',
    );
  const keys = program.command('keys').description("manage API keys in the server's database (run where DATA_DIR is)");
  keys
    .command('create')
    .description('create a key and print its secret (once)')
    .requiredOption('--name <name>', 'what uses the key, e.g. "ci"')
    .option('--project <project>', 'the project whose files and batches it sees (default: a project of its own)')
    .option('--admin', 'an operator key: /ops, /metrics, every project')
    .option('--create-db', 'create the database if DATA_DIR has none yet (first key, before the first start)')
    .addOption(dataDir())
    .action((o: { dataDir: string; name: string; project?: string; admin?: boolean; createDb?: boolean }) =>
      setExit(
        keysCreate(ctx(), o.dataDir, {
          name: o.name,
          project: o.project,
          admin: Boolean(o.admin),
          createDb: Boolean(o.createDb),
        }),
      ),
    );
  keys
    .command('list')
    .description('every key (never the secrets)')
    .addOption(dataDir())
    .action((o: { dataDir: string }) => setExit(keysList(ctx(), o.dataDir)));
  keys
    .command('revoke')
    .description('revoke a key by id or prefix')
    .argument('<id_or_prefix>')
    .addOption(dataDir())
    .action((id: string, o: { dataDir: string }) => setExit(keysRevoke(ctx(), o.dataDir, id)));

  program
    .command('export-starred')
    .description('the answers starred in the dashboard, as a JSONL fine-tuning dataset')
    .option('--batch <id>', 'only this batch (repeatable; default: every batch)', collect, [])
    .option('-o, --output <file>', 'write to a file instead of stdout')
    .action((o: { batch: string[]; output?: string }) => setExit(exportStarred(ctx(), o.batch, o.output)));

  return program;
}

/** Runs the CLI and resolves to its exit code (never calls process.exit itself). */
export async function runCli(argv: string[]): Promise<number> {
  const env = readCliEnv();
  let ctx: Ctx | undefined;
  const getCtx = () =>
    (ctx ??= {
      env,
      client: makeClient(env),
      tty: Boolean(process.stderr.isTTY) && !process.env.CI,
      out: (l) => process.stdout.write(`${l}\n`),
      err: (l) => process.stderr.write(`${l}\n`),
    });
  let code: number = EXIT.ok;
  // Each action returns its promise, which parseAsync awaits (errors reach the catch below).
  const program = buildProgram(getCtx, (p) => p.then((c) => void (code = c)));
  try {
    await program.parseAsync(argv);
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has printed the message (or the help / version) already.
      return e.exitCode === 0 ||
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
        ? EXIT.ok
        : EXIT.usage;
    }
    const { line, exitCode } = explain(e, env.baseUrl);
    process.stderr.write(`batchwright: ${line}\n`);
    return exitCode;
  }
}

/** Exit once stdout and stderr have drained, so piped output is never cut off. */
export function exitWith(code: number): void {
  process.exitCode = code;
  let pendingStreams = 2;
  const done = () => --pendingStreams === 0 && process.exit(code);
  process.stdout.write('', done);
  process.stderr.write('', done);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  // runCli resolves to an exit code; it rejects only on a bug, which Node then reports and exits 1 for.
  void runCli(process.argv).then(exitWith);
}
