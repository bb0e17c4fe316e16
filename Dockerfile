# syntax=docker/dockerfile:1
# Build: compiles TypeScript and generates the Prisma client.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The client SDK workspace: the service compiles against its wire types (client/src/protocol.ts).
COPY client/package.json client/tsconfig.json client/tsconfig.build.json ./client/
COPY client/src ./client/src
COPY scripts ./scripts
COPY prisma ./prisma
COPY prisma.config.ts tsconfig.json tsconfig.build.json ./
# npm install rather than npm ci: see .ci/run (the lockfile lacks some platforms' optional binaries).
RUN npm install --no-audit --no-fund
COPY src ./src
# The demo page's source: `npm run build` bundles it (served only with DEMO_ENABLED=true in production).
COPY web ./web
# --omit=optional too: the Prisma CLI (a devDependency) and typescript are also optional peers
# of @prisma/client, which --omit=dev alone keeps (npm 10 and 11). It also drops msgpackr-extract
# (msgpackr falls back to JavaScript) and pg-cloudflare (Workers only); the service needs none.
RUN npm run build && npm prune --omit=dev --omit=optional --ignore-scripts

# Run: production dependencies, compiled code and migrations only.
FROM node:24-bookworm-slim
ENV NODE_ENV=production PORT=3000 HOST=0.0.0.0
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/prisma ./prisma
COPY package.json ./
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--enable-source-maps", "dist/main.js"]
