#!/usr/bin/env bash
# `npm test`: install what is missing, type-check, then every vitest project (unit,
# integration, e2e). The tests start their own redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --need-redis
echo "test: type-checking (tsc --noEmit)..."
npx tsc -p . --noEmit
npx vitest run "$@"
