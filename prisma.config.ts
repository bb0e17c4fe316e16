import { defineConfig } from 'prisma/config';

// Used by the ordinary Prisma CLI (users with internet): `prisma migrate deploy`,
// `prisma migrate dev`. Offline, scripts/migrate.mjs applies the same migrations.
// `prisma generate` needs no database, so DATABASE_URL is optional here.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  ...(process.env.DATABASE_URL ? { datasource: { url: process.env.DATABASE_URL } } : {}),
});
