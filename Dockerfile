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

# ---- build: production node_modules (better-sqlite3 compiles here if no prebuilt fits) ----
FROM node:20-bookworm-slim AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# tsx is a production dependency (the server runs TypeScript directly), so --omit=dev keeps it.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# ---- runtime: no compilers ----
FROM ${BASE_IMAGE} AS runtime
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json models.yaml ./
COPY src ./src
COPY migrations ./migrations
COPY simulator ./simulator
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
ENTRYPOINT ["node", "--import", "tsx", "src/main.ts"]
CMD ["serve"]
