// Vitest setup file: each test file gets its own TMPDIR, removed afterwards, so the logs snap keeps from failed tools
// (by design, in the system temp directory) and the tests' own temporary files do not pile up between runs.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(process.env.TMPDIR ?? '/tmp', 'snap-test-run-'));
process.env.TMPDIR = dir;

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
