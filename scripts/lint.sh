#!/usr/bin/env bash
# `npm run lint` (and so `npm test`): eslint (type-checked rules, eslint.config.js), prettier
# --check (.prettierrc.json) and the module rules (dependency-cruiser, .dependency-cruiser.cjs).
# All three run, so one pass shows every kind of failure; the exit status is 1 if any failed.
# Quiet on success: one line per tool.
set -uo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/node_modules/.bin:$PATH" # the local eslint, prettier, depcruise (as under npm run)
failed=()

start=$SECONDS
if eslint .; then echo "lint: eslint ok ($((SECONDS - start)) s)"; else failed+=(eslint); fi

if prettier --check --log-level warn .; then
  echo "lint: prettier ok"
else
  echo "lint: formatting differs in the files above: run npx prettier --write <file> (or npm run format)"
  failed+=(prettier)
fi

if ! depcruise src simulator --config .dependency-cruiser.cjs; then
  echo "lint: a module rule is broken (docs/development.md, docs/architecture.md \"Module boundaries\")"
  failed+=(depcruise)
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: ${failed[*]}" >&2
  exit 1
fi
