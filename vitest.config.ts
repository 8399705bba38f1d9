import { availableParallelism } from 'node:os';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The files that take longest (measured: docs/development.md, "Test suite"). They start first, so
 * the short ones fill the other workers around them instead of leaving one long file at the end.
 */
const LONGEST_FIRST = [
  'test/e2e/fault-matrix.test.ts',
  'test/integration/slurm-cluster.test.ts',
  'test/integration/scale-out.test.ts',
  'test/integration/ops-health.test.ts',
  'test/integration/cli.test.ts',
  'test/e2e/crash-recovery.test.ts',
  'test/integration/bench-batch-smoke.test.ts',
  'test/integration/swap-on-demand.test.ts',
  'test/integration/batches-api.test.ts',
  'test/integration/ops-streams.test.ts',
];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = LONGEST_FIRST.findIndex((p) => f.moduleId.endsWith(p));
      return i < 0 ? LONGEST_FIRST.length : i;
    };
    const rest = await super.sort(files);
    return rest.sort((a, b) => rank(a) - rank(b));
  }
}

/**
 * Test files run in parallel: every file starts its own servers on free ports, its own temp
 * folders and its own key prefix in the run's one redis-server, so they share no state. Most of
 * a file's time is spent waiting (engines starting, batches running, timeouts), so a 2-core
 * machine runs more files than it has cores. VITEST_MAX_WORKERS overrides the count.
 */
const maxWorkers = Number(process.env.VITEST_MAX_WORKERS) || Math.max(2, availableParallelism() * 2);

export default defineConfig({
  test: {
    globals: false,
    globalSetup: ['./test/helpers/global-setup.ts'],
    maxWorkers,
    minWorkers: 1,
    sequence: { sequencer: LongestFirst },
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 } },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 120_000 },
      },
    ],
  },
});
