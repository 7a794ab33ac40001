// A test file's own scratch: a temporary directory (made as the file loads), the journal directory snap is given inside
// it, and the pids the file's tests start, each killed after its test.
import { join } from 'node:path';
import { afterAll, afterEach } from 'vitest';
import { makeTempDir, removeTempDirs } from './bundle.js';
import { killPid } from './target.js';

export function scratchFor(prefix: string): { dir: string; pids: number[]; env: () => Record<string, string> } {
  const dir = makeTempDir(prefix);
  const pids: number[] = [];
  afterEach(async () => {
    for (const pid of pids.splice(0)) await killPid(pid);
  });
  afterAll(removeTempDirs);
  return { dir, pids, env: () => ({ PROCSNAP_JOURNAL_DIR: join(dir, 'journal') }) };
}
