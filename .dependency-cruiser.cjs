/**
 * The module boundaries of docs/architecture.md ("Module boundaries") and the house style's
 * table, checked by dependency-cruiser: `npm run lint:deps` (part of `npm run lint`, so of
 * `npm test`) cruises src/ and simulator/. Type-only imports count (tsPreCompilationDeps): a
 * type import couples two modules as much as any other. Each rule's comment is what it keeps true.
 * Package paths are matched as `(^|/)node_modules/…`: a worktree's node_modules may be a symlink,
 * which resolves outside the repository.
 */
const SRC_NPM = ['npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-bundled', 'npm-no-pkg', 'npm-unknown'];
// Node modules that do I/O (files, sockets, processes, the terminal, the machine): not in domain/.
const IO_CORE =
  '^(node:)?(child_process|cluster|dgram|diagnostics_channel|dns|fs|http|http2|https|inspector|module|net|os|perf_hooks|process|readline|repl|tls|trace_events|tty|v8|vm|wasi|worker_threads)(/|$)';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'No import cycles: each module can be read, loaded and tested after what it imports.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'nothing-imports-main',
      severity: 'error',
      comment: 'src/main.ts is the only composition root: nothing in src/ imports it (tests may).',
      from: {},
      to: { path: '^src/main\\.ts$' },
    },
    {
      name: 'api-not-engines-or-worker',
      severity: 'error',
      comment:
        'The API reaches engines only over HTTP, at addresses that workers advertise in Redis (control/engine-router); ' +
        'what it shares with them lives in domain/.',
      from: { path: '^src/api/' },
      to: { path: '^src/(engines|worker)/' },
    },
    {
      name: 'worker-not-store-or-api',
      severity: 'error',
      comment: 'Workers talk to the control plane only through Redis (queue/jobs.ts), never SQLite or the API.',
      from: { path: '^src/worker/' },
      to: { path: '^src/(store|api)/' },
    },
    {
      name: 'engines-self-contained',
      severity: 'error',
      comment:
        'engines/ knows nothing of BullMQ, Redis, SQLite, the API or the worker: besides itself it imports ' +
        'only config/, log/, domain/, os/ and paths.ts (where the installation lives) ' +
        '(the worker reaches it through EngineAccess).',
      from: { path: '^src/engines/' },
      to: { path: '^src/', pathNot: '^src/((engines|config|log|domain|os)/|paths\\.ts$)' },
    },
    {
      name: 'paths-is-a-leaf',
      severity: 'error',
      comment:
        'src/paths.ts says where the installation lives (from source or from dist/) and is imported from ' +
        'every layer, so it imports nothing of ours.',
      from: { path: '^src/paths\\.ts$' },
      to: { path: '^src/' },
    },
    {
      name: 'engines-no-bullmq-or-redis',
      severity: 'error',
      comment: 'engines/ knows nothing of BullMQ (nor of Redis).',
      from: { path: '^src/engines/' },
      to: { path: '(^|/)node_modules/(bullmq|ioredis)/' },
    },
    {
      name: 'domain-imports-only-domain',
      severity: 'error',
      comment: 'domain/ is pure: it imports nothing of ours outside domain/.',
      from: { path: '^src/domain/' },
      to: { path: '^src/', pathNot: '^src/domain/' },
    },
    {
      name: 'domain-no-io',
      severity: 'error',
      comment: 'domain/ is pure: no Node module that does I/O, and no package but zod.',
      from: { path: '^src/domain/' },
      to: { dependencyTypes: ['core'], path: IO_CORE },
    },
    {
      name: 'domain-no-packages-but-zod',
      severity: 'error',
      comment: 'domain/ is pure: no package but zod.',
      from: { path: '^src/domain/' },
      to: { dependencyTypes: SRC_NPM, pathNot: '(^|/)node_modules/zod/' },
    },
    {
      name: 'webhooks-not-api-or-queue',
      severity: 'error',
      comment: 'Webhook delivery runs from SQLite rows alone: it never imports api/ or queue/.',
      from: { path: '^src/webhooks/' },
      to: { path: '^src/(api|queue)/' },
    },
    {
      name: 'store-not-upper-layers',
      severity: 'error',
      comment: 'store/ (SQLite and file bytes) imports none of api/, queue/, worker/, engines/.',
      from: { path: '^src/store/' },
      to: { path: '^src/(api|queue|worker|engines)/' },
    },
    {
      name: 'queue-not-upper-layers',
      severity: 'error',
      comment: 'queue/ (the wire between control plane and workers) imports none of store/, api/, worker/, engines/.',
      from: { path: '^src/queue/' },
      to: { path: '^src/(store|api|worker|engines)/' },
    },
    {
      name: 'config-and-log-are-leaves',
      severity: 'error',
      comment: 'config/ and log/ import no app module: everything else may import them.',
      from: { path: '^src/(config|log)/' },
      to: { path: '^src/', pathNot: '^src/(config|log)/' },
    },
    {
      name: 'sql-only-in-store',
      severity: 'error',
      comment: 'store/ is the only code that issues SQL: only it imports better-sqlite3 or drizzle-orm.',
      from: { path: '^src/', pathNot: '^src/store/' },
      to: { path: '(^|/)node_modules/(better-sqlite3|drizzle-orm)/' },
    },
    {
      name: 'cli-over-http',
      severity: 'error',
      comment:
        'The CLI is a client: it talks to a server only over HTTP (openai, fetch). Only commands/keys.ts opens ' +
        "DATA_DIR's SQLite (next rule).",
      from: { path: '^src/cli/', pathNot: '^src/cli/commands/keys\\.ts$' },
      to: { path: '^src/', pathNot: '^src/cli/' },
    },
    {
      name: 'cli-keys-opens-only-the-key-store',
      severity: 'error',
      comment:
        '`batchwright keys` makes the first key in SQLite: it may import store/db.ts and auth/keys-admin.ts only.',
      from: { path: '^src/cli/commands/keys\\.ts$' },
      to: { path: '^src/', pathNot: '^src/(cli/|store/db\\.ts$|auth/keys-admin\\.ts$)' },
    },
    {
      name: 'cli-keys-loads-sqlite-lazily',
      severity: 'error',
      comment: 'commands/keys.ts loads the store with import(), so the other commands never load better-sqlite3.',
      from: { path: '^src/cli/commands/keys\\.ts$' },
      // `import('…').Db` in a type position is a type-import: erased, it loads nothing.
      to: { path: '^src/(store|auth)/', dependencyTypesNot: ['dynamic-import', 'type-import'] },
    },
    {
      name: 'nothing-imports-cli',
      severity: 'error',
      comment: 'The CLI is a client of the server, not part of it: nothing else in src/ imports src/cli.',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};
