#!/usr/bin/env node
// `npm run build`: compiles every entry point that production runs into one ES module each in
// dist/, with esbuild (a devDependency), so nothing at run time needs tsx. Plain JavaScript, so
// it runs without tsx. scripts/ensure-built.sh runs it when dist/ is missing or stale.
//
// Each bundle holds our code and the pure-JavaScript packages it imports: Node then reads one
// file per process instead of resolving and compiling hundreds (docs/performance.md, "Start time
// and memory"). Packages stay external (loaded from node_modules at run time, so they must be
// `dependencies`) when they are native or find their own files from their location:
//
// - better-sqlite3, node-llama-cpp: native addons (and node-llama-cpp loads its binaries and
//   spawns helpers from its own folder);
// - ioredis: reads its own package.json (`CLIENT SETINFO lib-ver`) and uses __dirname in its
//   error stacks;
// - optional packages that other packages load in a try/catch (OPTIONAL below).
//
// The build fails when a bundled package's code refers to its own location (__dirname,
// __filename, import.meta.url, require.resolve), unless it is listed in REVIEWED below with
// why that is harmless here, and when an external import is neither in `dependencies` nor
// OPTIONAL.
//
// Usage: node scripts/build.mjs [--quiet]
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist');
const quiet = process.argv.includes('--quiet');

/** dist/<name>.js ← source. src/paths.ts, src/engines/commands.ts and the docs name these. */
const ENTRIES = {
  main: 'src/main.ts', // serve | worker | all
  cli: 'src/cli/main.ts', // the batchwright command (bin/batchwright.mjs)
  simulator: 'simulator/main.ts', // engine: sim
  'engine-embedded': 'src/engines/embedded/main.ts', // engine: embedded
  keys: 'scripts/keys.ts', // API keys without dev tools (also `batchwright keys`)
};

/** Imports a package makes in a try/catch, for a feature batchwright does not use: left as they are. */
const OPTIONAL = {
  '@valkey/valkey-glide': "bullmq's Valkey GLIDE client (not installed; bullmq uses ioredis here)",
  'msgpackr-extract':
    "msgpackr's native unpacker (installed under msgpackr, so not found from dist/: msgpackr then unpacks in JavaScript; bullmq only packs)",
};

const EXTERNAL = ['better-sqlite3', 'node-llama-cpp', 'ioredis', ...Object.keys(OPTIONAL)];

/** Bundled packages whose location-dependent code was read, and why it is harmless here. */
const REVIEWED = {
  pino: 'worker-thread transports (pino.transport) only: batchwright logs to a stream, no transports',
  'thread-stream': "pino's transports only (see pino)",
  bullmq: 'sandboxed processors (a processor file run in a child) only: workers pass a function',
  undici: "__filename only to add a line to fetch errors' stacks, behind typeof __filename (meant for bundles)",
  msgpackr: '__filename only when require() is missing: the bundle defines require (banner)',
};

const started = new Date();
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error(
    'build: esbuild is not installed (a devDependency: node_modules was installed with --omit=dev?).\n' +
      '       Run `npm ci` (with dev dependencies), then `npm run build`.',
  );
  process.exit(3);
}

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
const packageOf = (spec) =>
  spec
    .split('/')
    .slice(0, spec.startsWith('@') ? 2 : 1)
    .join('/');

let result;
try {
  result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: Object.entries(ENTRIES).map(([out, src]) => ({ in: src, out })),
    outdir: DIST,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20.18',
    external: EXTERNAL,
    // Bundled CommonJS packages call require() for Node's built-ins and for the externals.
    banner: {
      js: "import { createRequire as __bwCreateRequire } from 'node:module';\nconst require = __bwCreateRequire(import.meta.url);",
    },
    // Function and class names as in the source (logs, error names, Fastify's plugin names).
    keepNames: true,
    // Maps to the TypeScript (and node_modules) files for NODE_OPTIONS=--enable-source-maps; not
    // read otherwise. Without sourcesContent: the positions, not copies of the sources.
    sourcemap: 'linked',
    sourcesContent: false,
    metafile: true,
    write: false,
    logLevel: 'warning',
  });
} catch {
  process.exit(1); // esbuild has printed the errors
}

const problems = [];
const dependencies = new Set(Object.keys(pkg.dependencies ?? {}));
for (const [file, out] of Object.entries(result.metafile.outputs)) {
  for (const imp of out.imports) {
    if (!imp.external || builtins.has(imp.path) || imp.path.startsWith('node:')) continue;
    const name = packageOf(imp.path);
    if (!dependencies.has(name) && !OPTIONAL[name])
      problems.push(`${path.basename(file)} imports ${imp.path}, which is not in dependencies`);
  }
}
const LOCATION = /\b__dirname\b|\b__filename\b|\bimport\.meta\.url\b|\brequire\.resolve\s*\(/;
const flagged = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input.replaceAll('\\', '/'));
  if (!m || REVIEWED[m[1]]) continue;
  const text = readFileSync(path.resolve(ROOT, input), 'utf8').replace(/\/\*[\s\S]*?\*\/|^\s*\/\/.*$/gm, '');
  if (LOCATION.test(text)) flagged.set(m[1], [...(flagged.get(m[1]) ?? []), input]);
}
for (const [name, files] of flagged)
  problems.push(
    `${name} finds files from its own location (${files.slice(0, 2).join(', ')}${files.length > 2 ? ', …' : ''}): ` +
      'add it to EXTERNAL (and dependencies) in scripts/build.mjs, or to REVIEWED with why that code never runs',
  );
if (problems.length) {
  for (const p of problems) console.error(`build: ${p}`);
  process.exit(1);
}

// One file at a time, each written beside its target and renamed over it: a process starting
// meanwhile (or a second build) reads a whole old file or a whole new one, never half of one.
mkdirSync(DIST, { recursive: true });
const written = new Set(['.build-stamp']);
for (const f of result.outputFiles) {
  const tmp = `${f.path}.${process.pid}.tmp`;
  writeFileSync(tmp, f.contents);
  renameSync(tmp, f.path);
  written.add(path.basename(f.path));
}
for (const name of readdirSync(DIST))
  if (!written.has(name) && !name.endsWith('.tmp')) rmSync(path.join(DIST, name), { recursive: true });
// The stamp carries the time the build started: a source saved during the build is newer, so
// scripts/ensure-built.sh builds again next time.
const stamp = path.join(DIST, '.build-stamp');
writeFileSync(stamp, `${started.toISOString()}\n`);
utimesSync(stamp, started, started);

if (!quiet) {
  const sizes = Object.keys(ENTRIES).map((n) => {
    const file = path.join(DIST, `${n}.js`);
    return `${n}.js ${existsSync(file) ? Math.round(statSync(file).size / 1024) : '?'} KB`;
  });
  console.error(`build: dist/ in ${((Date.now() - started.getTime()) / 1000).toFixed(1)} s (${sizes.join(', ')})`);
}
