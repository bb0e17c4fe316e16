import swc from 'unplugin-swc';
import { defineConfig } from 'vitest/config';

// SWC compiles the tests and the code under test: esbuild (Vite's default) does not
// emit decorator metadata, without which Nest injects `undefined`.
const plugins = [swc.vite({ module: { type: 'es6' } })];

/**
 * The end-to-end files that run several instances on one Redis (live fan-out, presence,
 * queues and failover across instances): the cluster project runs them on a Redis Cluster.
 */
const CLUSTER_E2E = [
  'test/e2e/streams.spec.ts',
  'test/e2e/offline-queue.spec.ts',
  'test/e2e/client-failover.spec.ts',
  'test/e2e/e2e-recipients.spec.ts',
  'test/e2e/cross-instance-order.spec.ts',
];

export default defineConfig({
  plugins,
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      {
        plugins,
        test: {
          name: 'unit',
          include: ['src/**/*.spec.ts', 'client/src/**/*.spec.ts'],
          environment: 'node',
        },
      },
      {
        plugins,
        test: {
          // The dependency checks (advisories, the Socket.IO stack's floors): they read the
          // lockfile and node_modules and need no services.
          name: 'supply-chain',
          include: ['test/supply-chain/**/*.spec.ts'],
          environment: 'node',
        },
      },
      {
        plugins,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.spec.ts'],
          environment: 'node',
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        plugins,
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.spec.ts'],
          environment: 'node',
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        plugins,
        test: {
          // The multi-instance tests again, against a local Redis Cluster (three masters, one
          // replica each; REDIS_MODE=cluster), and the cluster's own checks. A cluster has
          // database 0 only, which the files share: one file at a time.
          name: 'cluster',
          include: [...CLUSTER_E2E, 'test/cluster/**/*.spec.ts'],
          environment: 'node',
          globalSetup: ['test/support/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        plugins,
        test: {
          // The demo page in headless chromium (playwright-core), against the service in process.
          name: 'browser',
          include: ['test/browser/**/*.spec.ts'],
          environment: 'node',
          globalSetup: ['test/support/global-setup.ts', 'test/support/browser-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
