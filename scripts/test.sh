#!/usr/bin/env bash
# `npm test`: install what is missing, type-check, lint (scripts/lint.sh), then every vitest
# project (unit, integration, e2e). The tests start their own redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --need-redis --need-chromium
# llama-server for the llamacpp engine tests: built once into a cache (minutes), reused after (<1 s).
# A failed build is not fatal: those tests skip with the reason.
bash scripts/build-llama-server.sh || echo "test: llama-server unavailable; the llamacpp engine tests will be skipped"
# A real single-node SLURM cluster for the engines-as-SLURM-jobs tests (test/integration/slurm-*):
# as root on Debian, installed once (~1 min) and started (~1 s); elsewhere those tests skip, saying why.
if [ "$(id -u)" = 0 ] && grep -q '^ID=debian' /etc/os-release 2>/dev/null; then
  if ! sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    skip_apt=0; command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && skip_apt=1
    SKIP_APT=$skip_apt bash scripts/slurm-cluster.sh || echo "test: SLURM cluster setup failed; the SLURM tests will try once more, then skip with the reason"
  fi
else
  echo "test: not root on Debian: no SLURM cluster is brought up; the SLURM tests skip unless one answers"
fi
echo "test: type-checking (tsc --noEmit)..."
npx tsc -p . --noEmit
echo "test: lint (eslint, prettier --check, dependency-cruiser)..."
npm run -s lint
npx vitest run "$@"
