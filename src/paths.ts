/**
 * Where the running code lives. From source (tsx: tests, `npm run sim`, dev) this module is
 * `<root>/src/paths.ts`; compiled (`npm run build`, scripts/build.mjs) it is bundled into
 * `<root>/dist/<entry>.js`. Both are one folder below the repository root, so ROOT is the same
 * either way, and files the code reads at run time (migrations/, src/dashboard/,
 * scripts/gen-tiny-gguf.mjs, node_modules/) are found from it without being copied into dist/.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(import.meta.url);

/** The repository (package) root: the folder with package.json, migrations/ and node_modules/. */
export const ROOT = path.resolve(path.dirname(HERE), '..');

/** True when this is the compiled build (a .js bundle in dist/), false when run from the TypeScript source. */
export const COMPILED = path.basename(path.dirname(HERE)) === 'dist' && HERE.endsWith('.js');

/** Where scripts/build.mjs writes the compiled entry points (dist/main.js, dist/simulator.js, ...). */
export const DIST = path.join(ROOT, 'dist');
