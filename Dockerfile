# bluegreen-proxy: a first image (the finished one, with its build test, comes with issue 7).
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
USER node
EXPOSE 8080 9090
# The admin listener must be reachable from the health check: give it admin.listen on 0.0.0.0 with a token.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form, so SIGTERM reaches node and the proxy drains gracefully.
ENTRYPOINT ["node", "bin/bluegreen.js"]
CMD ["serve", "--config", "/etc/bluegreen/config.yaml"]
