# syntax=docker/dockerfile:1
# bluegreen-proxy. The image runs the built JavaScript (dist/, `npm run build`), as the npm package does.
# test/integration/dockerfile.test.ts replays these stages without a Docker engine; keep the two in step.
#
#   docker build -t bluegreen-proxy .
#   docker run -v "$PWD/bluegreen.yaml:/etc/bluegreen/config.yaml:ro" -e BLUEGREEN_ADMIN_TOKEN=... \
#     -p 8080:8080 -p 9090:9090 bluegreen-proxy
#
# Inside a container the admin API must listen on 0.0.0.0 (probes and Prometheus come from outside), and a
# non-loopback admin listener refuses to start without a token: give the config admin.token ("${VAR}" from the
# environment). deploy/docker/config.yaml is a config made for this image.

# Stage 1: the build. Every dependency (TypeScript is a development one), then src/ compiled to dist/. No install
# script runs: none of the dependencies needs one, and `prepare` would build before src/ is copied.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build

# Stage 2: the production dependencies only. Copying the manifests alone first keeps this layer cached until they
# change; BuildKit runs it beside the build.
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# Stage 3: the runtime. The built JavaScript and production node_modules, nothing else (no TypeScript sources, no
# npm cache, no dev tools, no tests).
FROM node:24-slim
LABEL org.opencontainers.image.title="bluegreen-proxy" \
      org.opencontainers.image.description="A blue-green traffic switch: an edge proxy that flips between two upstream pools" \
      org.opencontainers.image.licenses="MIT"
# BLUEGREEN_CONFIG: where `serve` reads its config (mount a file or a ConfigMap there).
# BLUEGREEN_ADMIN: this container's admin API, for the HEALTHCHECK and for `docker exec ... bluegreen status`.
ENV NODE_ENV=production \
    BLUEGREEN_CONFIG=/etc/bluegreen/config.yaml \
    BLUEGREEN_ADMIN=http://127.0.0.1:9090
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY --from=build /app/dist ./dist
# The state directory, writable by the runtime user (a named volume mounted there inherits this): the file store's
# file, or with Redis each replica's copy of the last state it applied (state.redis.lastStateFile's default).
RUN mkdir -p /etc/bluegreen /var/lib/bluegreen && chown 1000:1000 /var/lib/bluegreen
# "node" (1000:1000) in the base image; numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080 9090
# Liveness of the admin listener. Node itself makes the call: the slim image has no curl or wget.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch((process.env.BLUEGREEN_ADMIN||'http://127.0.0.1:9090')+'/healthz',{signal:AbortSignal.timeout(2000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and gets SIGTERM itself, so the proxy drains (shutdown.delay, shutdown.grace) and
# exits 0. A shell form would put /bin/sh in between, which does not forward the signal.
ENTRYPOINT ["node", "bin/bluegreen.js"]
CMD ["serve"]
