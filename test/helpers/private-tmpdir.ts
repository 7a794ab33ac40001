// Vitest setup file: each test file gets its own TMPDIR, removed afterwards, so the tests' own temporary files do not
// pile up between runs; and its own PROCSNAP_LOG_DIR inside it, so the logs snap keeps from failed tools (in
// /var/log/procsnap for root otherwise) do not fill the host's.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(process.env.TMPDIR ?? '/tmp', 'snap-test-run-'));
process.env.TMPDIR = dir;
process.env.PROCSNAP_LOG_DIR = join(dir, 'logs');

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
