#!/usr/bin/env bash
# `npm test`: install what is missing, type-check, then every vitest project (unit,
# integration, e2e). The tests start their own redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --need-redis --need-chromium
# llama-server for the llamacpp engine tests: built once into a cache (minutes), reused after (<1 s).
# A failed build is not fatal: those tests skip with the reason.
bash scripts/build-llama-server.sh || echo "test: llama-server unavailable; the llamacpp engine tests will be skipped"
echo "test: type-checking (tsc --noEmit)..."
npx tsc -p . --noEmit
npx vitest run "$@"
