// A child that exits as soon as the restored tree runs (a worker whose work was done, a fork about to end) does what
// it did in the original: the restore says so and leaves the rest of the tree running, instead of calling the whole
// restore failed and killing every process it had brought back.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchFor } from '../helpers/scratch.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, processExists, readProcStat, waitFor } from '../helpers/target.js';

const { dir, pids, env } = scratchFor('snap-short-lived-');

// The child lives until a wall-clock moment given on the command line, then exits; the parent reaps it and goes on.
const SCRIPT = [
  'import os, sys, time',
  'until = float(sys.argv[2])',
  'child = os.fork()',
  'if child == 0:',
  '    while time.time() < until: time.sleep(0.02)',
  '    os._exit(0)',
  "out = sys.argv[1]; open(out + '.tmp', 'w').write(str(child)); os.rename(out + '.tmp', out)",
  'os.waitpid(child, 0)',
  'while True: time.sleep(0.05)',
].join('\n');

describe('restore of a tree whose child exits as soon as it runs', () => {
  it('exits 0 with a warning naming the child; the parent is restored and running', async () => {
    const childFile = join(dir, 'child');
    const until = Date.now() / 1000 + 4;
    const parent = spawn('/usr/bin/python3', ['-c', SCRIPT, childFile, String(until)], { detached: true, stdio: 'ignore' });
    pids.push(parent.pid!);
    await waitFor(() => existsSync(childFile), { what: 'the parent to fork its child' });
    const child = Number(readFileSync(childFile, 'utf8'));
    const bundle = join(dir, 'tree.tar.zst');
    const dump = await runSnap(['dump', String(parent.pid), '-o', bundle, '--json', '--quiet'], { env: env() });
    expect(dump.exitCode, dump.stderr).toBe(0);
    await killPid(parent.pid!);
    await killPid(child);
    // Past the child's moment: restored, it finds its time up and exits at once.
    await waitFor(() => Date.now() / 1000 > until + 0.5, { what: "the child's moment to pass", timeoutMs: 10_000 });
    const run = await runSnap(['restore', bundle, '--allow-unsigned', '--json'], { env: env() });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { pid: number; warnings: string[]; processes: { pid: number; left: string }[] };
    pids.push(result.pid);
    expect(result.pid).toBe(parent.pid);
    await waitFor(() => !processExists(child) || readProcStat(child)?.state === 'Z', { what: 'the restored child to have exited' });
    expect(readProcStat(result.pid)?.state).not.toBe('T');
    expect(processExists(result.pid)).toBe(true);
    // Either the child was seen to go while the tree was put back (a warning names it), or it went right after.
    const named = result.warnings.some((w) => w.startsWith(`restored process ${child} (python3) exited as soon as it ran`));
    expect(named || result.processes.some((p) => p.pid === child)).toBe(true);
  });
});
