# One image for the gateway, the processors and the simulator: the TypeScript sources run by tsx,
# as the npm scripts run them (tsx is a production dependency), on Node 20, production
# dependencies only, as the unprivileged `node` user. docker-compose.yml picks the program with
# `command`, e.g. `processors/main.ts`. No secret is read at build time: configuration is
# environment variables (or a file named by CONFIG_FILE) at run time.
# Pinned to the Node version the README's measurements were taken with.

# Stage 1: dependencies. Only the manifests are copied, so this layer is rebuilt only when they
# change. npm ci installs exactly the lockfile, and with --omit=dev none of the test tools.
FROM node:20.20.2-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# Stage 2: runtime. Sources and dependencies stay owned by root and read-only to the process.
FROM node:20.20.2-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules node_modules
COPY package.json tsconfig.json ./
COPY contract contract
COPY common common
COPY gateway gateway
COPY processors processors
COPY simulators simulators
USER node
# MQTT, MQTT over WebSocket, gateway HTTP; processors HTTP.
EXPOSE 1883 8083 8080 8081
# `node --import tsx` rather than the tsx CLI: node is then PID 1 and receives SIGTERM itself, so
# each program's own shutdown (drain, checkpoint, give leases back) runs on `docker stop` without
# a relaying parent. No HEALTHCHECK here: the three programs serve different ports (the simulator
# none), so each compose service declares its own.
ENTRYPOINT ["node", "--import", "tsx"]
CMD ["gateway/main.ts"]
