#!/usr/bin/env bash
# `npm start`: install what is missing, build dist/ if it is missing or stale, then run the API
# and one worker (or the mode given: serve | worker | all) as compiled JavaScript.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_URL:-}" ]; then bash scripts/setup.sh --need-redis; else bash scripts/setup.sh; fi
bash scripts/ensure-built.sh
exec node dist/main.js "${1:-all}"
