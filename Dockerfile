# syntax=docker/dockerfile:1
# batchwright: one image for the API (`serve`) and for workers (`worker`).
#
#   docker build -t batchwright .
#   docker run -p 4080:4080 -e HOST=0.0.0.0 -v bw-data:/app/data batchwright serve
#
# The default base runs the API and simulator (`engine: sim`) models. Workers that serve vLLM
# models need vLLM in the image: build on a vLLM image instead, e.g.
#
#   docker build --build-arg BASE_IMAGE=vllm/vllm-openai:latest -t batchwright-vllm .
#
# Node is copied in from the build stage, so any glibc-based BASE_IMAGE works.
ARG BASE_IMAGE=node:20-bookworm-slim

# ---- build: dist/ and production node_modules (better-sqlite3 compiles here if no prebuilt fits) ----
FROM node:20-bookworm-slim AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# With dev dependencies: the build needs esbuild (scripts/build.mjs).
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
COPY simulator ./simulator
COPY scripts/keys.ts ./scripts/
RUN npm run build
# Then only what production runs: the compiled code imports no devDependency (the build checks).
RUN npm prune --omit=dev --no-audit --no-fund && npm cache clean --force

# ---- runtime: no compilers, no TypeScript: dist/ and the files it reads at run time ----
FROM ${BASE_IMAGE} AS runtime
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=deps /app/dist ./dist
# package.json: "type": "module" for dist/*.js. The rest is found from the root (src/paths.ts).
COPY package.json models.yaml ./
COPY migrations ./migrations
COPY src/dashboard ./src/dashboard
COPY scripts/gen-tiny-gguf.mjs ./scripts/
RUN mkdir -p /app/data && chown -R 1000:1000 /app/data
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=4080 \
    DATA_DIR=/app/data \
    MODELS_FILE=/app/models.yaml \
    HOME=/app/data \
    USER=batchwright
# HOME under the data volume: a worker's Hugging Face cache (~/.cache/huggingface) survives restarts.
USER 1000:1000
VOLUME ["/app/data"]
EXPOSE 4080
# No HEALTHCHECK here: only `serve` has /readyz (see docker-compose.yml).
# Overrides the entrypoint of vLLM base images too. Modes: serve | worker | all.
# The CLI and key admin: docker run --entrypoint node batchwright dist/cli.js … (or dist/keys.js).
ENTRYPOINT ["node", "dist/main.js"]
CMD ["serve"]
