// Test configuration. The e2e tests (test/e2e/) drive real processes through real criu and gdb as root, so files run
// one at a time and get generous timeouts; scripts/setup.sh builds the fixtures and dist/ before vitest starts.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Two files freezing, dumping and restoring processes at once would disturb each other's timings and PIDs.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    // Kills any target a test file left running, even when the file forgot its own afterAll.
    setupFiles: ['test/helpers/kill-leftover-targets.ts', 'test/helpers/private-tmpdir.ts'],
    // The plain summary must come after the default reporter: CI reads the run's last line.
    reporters: ['default', './test/reporters/plain-summary.ts'],
  },
});
