#!/usr/bin/env bash
# `npm start`: install what is missing, then run the API and one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_URL:-}" ]; then bash scripts/setup.sh --need-redis; else bash scripts/setup.sh; fi
exec node --import tsx src/main.ts "${1:-all}"
