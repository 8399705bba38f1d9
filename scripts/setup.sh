#!/usr/bin/env bash
# Installs what the server and its tests need, and says what it does:
#   - npm dependencies (npm ci) when node_modules is missing or older than package-lock.json;
#   - redis-server with apt-get when it is missing and needed (sudo when not root);
#   - Debian's chromium with apt-get when /usr/bin/chromium is missing and asked for (the
#     dashboard's browser test; not fatal: that test skips with the reason).
# Usage: scripts/setup.sh [--need-redis] [--need-chromium]
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_REDIS=0
NEED_CHROMIUM=0
for arg in "$@"; do
  case "$arg" in
    --need-redis) NEED_REDIS=1 ;;
    --need-chromium) NEED_CHROMIUM=1 ;;
  esac
done

# `npm ci` from the complete lockfile. package.json pins (overrides) rollup and
# msgpackr-extract to releases whose every platform package the registry has: with newer ones
# some mirrors lack the macOS/Windows binaries, the lockfile cannot list them, and `npm ci`
# refuses it as out of sync.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies (npm ci; the first time builds better-sqlite3, ~2 min)..."
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ "$NEED_REDIS" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: redis-server is missing and this is not a Debian/Ubuntu machine." >&2
    echo "       Install Redis 6.2+ with your package manager, or set REDIS_URL=redis://host:6379." >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: redis-server not found; installing it with ${SUDO:+sudo }apt-get install redis-server..."
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  echo "setup: installed $(redis-server --version | cut -d' ' -f1-3)"
fi

# Browser and terminal tests: Debian's chromium (the dashboard's e2e test) and tmux (the CLI on a
# real terminal). Each test skips, saying why, when its tool could not be installed.
if [ "$NEED_CHROMIUM" = 1 ]; then
  missing=""
  [ -x /usr/bin/chromium ] || missing="chromium"
  command -v tmux >/dev/null 2>&1 || missing="$missing tmux"
  if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1; then
      SUDO=""
      if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
      echo "setup: installing$missing with ${SUDO:+sudo }apt-get (the dashboard's browser test and the CLI's terminal test)..."
      # shellcheck disable=SC2086
      if $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
        echo "setup: installed$missing"
      else
        echo "setup: installing$missing failed; the tests that need it will be skipped" >&2
      fi
    else
      echo "setup:$missing missing and this is not a Debian/Ubuntu machine; the tests that need it will be skipped" >&2
    fi
  fi
fi
