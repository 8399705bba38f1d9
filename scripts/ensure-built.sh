#!/usr/bin/env bash
# Builds dist/ (scripts/build.mjs, ~5 s) when it is missing or older than what it is built from:
# src/ (but not src/dashboard/, which the server reads at run time), simulator/,
# scripts/keys.ts, scripts/build.mjs, package.json, package-lock.json, tsconfig.json.
# Run by scripts/start.sh and bin/batchwright.mjs; costs a few milliseconds when dist/ is fresh.
# A stale dist/ that cannot be rebuilt (no esbuild: installed with --omit=dev) is used as it is,
# with a warning; a missing one is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=dist/.build-stamp
why=""
if [ ! -f "$stamp" ]; then
  why="dist/ has not been built"
else
  inputs=()
  for p in src simulator scripts/keys.ts scripts/build.mjs package.json package-lock.json tsconfig.json; do
    [ -e "$p" ] && inputs+=("$p")
  done
  if [ ${#inputs[@]} -gt 0 ]; then
    newer=$(find "${inputs[@]}" -path src/dashboard -prune -o -newer "$stamp" -print 2>/dev/null | head -1 || true)
    [ -n "$newer" ] && why="$newer is newer than dist/"
  fi
fi
[ -z "$why" ] && exit 0
echo "build: $why; building (npm run build)..." >&2
rc=0
node scripts/build.mjs || rc=$?
if [ "$rc" -ne 0 ]; then
  if [ "$rc" -eq 3 ] && [ -f dist/main.js ] && [ -f "$stamp" ]; then
    echo "build: could not rebuild; running the existing dist/ (built $(cat "$stamp"))" >&2
    exit 0
  fi
  exit "$rc"
fi
