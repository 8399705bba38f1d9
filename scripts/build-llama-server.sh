#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` offline from the source bundle node-llama-cpp ships
# (node_modules/node-llama-cpp/llama/gitRelease.bundle), static (-DBUILD_SHARED_LIBS=OFF), into a
# cache folder; reuses the cached binary when it exists (well under a second).
#   LLAMA_CACHE_DIR  where to build (default ~/.cache/batchwright/llama.cpp-<tag>-<bundle head>)
# Prints the binary's path as its last line. The engine `llamacpp` finds it there (or via LLAMA_SERVER).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_DIR=node_modules/node-llama-cpp/llama
BUNDLE="$LLAMA_DIR/gitRelease.bundle"
fail() { echo "build-llama-server: FAILED: $*" >&2; exit 1; }

[ -f "$BUNDLE" ] || fail "$BUNDLE not found (run npm install first)"

if [ -z "${LLAMA_CACHE_DIR:-}" ]; then
  tag=$(node -e 'try{process.stdout.write(require("./'"$LLAMA_DIR"'/llama.cpp.info.json").tag||"")}catch{}' 2>/dev/null || true)
  size=$(stat -c %s "$BUNDLE")
  LLAMA_CACHE_DIR="$HOME/.cache/batchwright/llama.cpp-${tag:-unknown}-${size}"
fi
BIN="$LLAMA_CACHE_DIR/build/bin/llama-server"

if [ -x "$BIN" ]; then
  echo "build-llama-server: cached: $BIN"
  exit 0
fi

for tool in cmake g++ git make; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is missing; install with: sudo apt-get install -y cmake g++ git make"
done

echo "build-llama-server: building llama-server into $LLAMA_CACHE_DIR (several minutes)..."
start=$(date +%s)
mkdir -p "$LLAMA_CACHE_DIR"
log="$LLAMA_CACHE_DIR/build.log"
{
  rm -rf "$LLAMA_CACHE_DIR/src" "$LLAMA_CACHE_DIR/build"
  git clone -q "$BUNDLE" "$LLAMA_CACHE_DIR/src"
  cmake -S "$LLAMA_CACHE_DIR/src" -B "$LLAMA_CACHE_DIR/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON
  cmake --build "$LLAMA_CACHE_DIR/build" --target llama-server -j"$(nproc)"
} >"$log" 2>&1 || fail "build error, see $log (last lines: $(tail -n 3 "$log" | tr '\n' ' '))"

[ -x "$BIN" ] || fail "build finished but $BIN is missing; see $log"
echo "build-llama-server: built in $(( $(date +%s) - start )) s"
echo "build-llama-server: $BIN"
