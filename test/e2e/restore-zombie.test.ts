// A tree bare criu dumps and restores as it was: a parent that never reaps the child that exited (criu makes the
// zombie again, with its exit status) and that holds a signal it blocked, still pending. snap must give it back the
// same, not refuse the zombie as a process that was not restored.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, processExists, readProcFile, readProcStat, readThreadStates, waitFor } from '../helpers/target.js';

let journalDir: string;
let outDir: string;
const pids: number[] = [];
beforeAll(() => {
  journalDir = makeTempDir('snap-zombie-journal-');
  outDir = makeTempDir('snap-zombie-out-');
});
afterEach(async () => {
  for (const pid of pids.splice(0)) await killPid(pid);
});
afterAll(removeTempDirs);

const env = () => ({ PROCSNAP_JOURNAL_DIR: journalDir });

// The child exits with status 3 and is never waited for; SIGUSR1 is blocked, then sent to the process itself.
const SCRIPT = [
  'import os, signal, sys, time',
  'child = os.fork()',
  'if child == 0:',
  '    os._exit(3)',
  'signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})',
  'os.kill(os.getpid(), signal.SIGUSR1)',
  "out = sys.argv[1]; open(out + '.tmp', 'w').write(str(child)); os.rename(out + '.tmp', out)",
  'while True: time.sleep(0.05)',
].join('\n');

const SIGUSR1_BIT = 1n << 9n; // signal 10

/** Whether SIGUSR1 is pending (for the process or its main thread) and blocked in pid. */
function usr1PendingAndBlocked(pid: number): { pending: boolean; blocked: boolean } {
  const status = readProcFile(`/proc/${pid}/status`) ?? '';
  const mask = (name: string) => BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? '0'}`);
  return {
    pending: ((mask('ShdPnd') | mask('SigPnd')) & SIGUSR1_BIT) !== 0n,
    blocked: (mask('SigBlk') & SIGUSR1_BIT) !== 0n,
  };
}

describe('restore of a tree with a zombie and a pending blocked signal', () => {
  it('dumped, killed and restored: the parent runs, the child is its zombie again, SIGUSR1 is still pending and blocked', async () => {
    const dir = makeTempDir('snap-zombie-');
    const childFile = join(dir, 'child');
    const parent = spawn('/usr/bin/python3', ['-c', SCRIPT, childFile], { detached: true, stdio: 'ignore' });
    const pid = parent.pid!;
    pids.push(pid);
    const child = await waitFor(() => existsSync(childFile) && Number(readFileSync(childFile, 'utf8')), { what: 'the python to fork' });
    await waitFor(() => readProcStat(child)?.state === 'Z', { what: `child ${child} to be a zombie` });
    expect(readProcStat(child)?.ppid).toBe(pid);
    expect(usr1PendingAndBlocked(pid)).toEqual({ pending: true, blocked: true });

    const bundle = join(outDir, `zombie-${pid}.snap.tar.zst`);
    const dump = await runSnap(['dump', String(pid), '-o', bundle, '--json'], { env: env() });
    expect(dump.exitCode, `snap dump failed:\n${dump.stderr}`).toBe(0);
    await killPid(pid);
    await waitFor(() => !processExists(pid) && !processExists(child), { what: `pids ${pid} and ${child} to be free`, timeoutMs: 15_000 });

    const restore = await runSnap(['restore', bundle, '--allow-unsigned', '--json'], { env: env() });
    expect(restore.exitCode, `snap restore failed:\n${restore.stderr}`).toBe(0);
    const restoredPid = (JSON.parse(restore.stdout) as { pid: number }).pid;
    pids.push(restoredPid);
    expect(restoredPid).toBe(pid);
    expect(readThreadStates(restoredPid).every((s) => s !== 'T' && s !== 't' && s !== 'Z'), 'the restored parent runs').toBe(true);
    const zombie = readProcStat(child);
    expect(zombie?.state, `child ${child} after the restore`).toBe('Z');
    expect(zombie?.ppid).toBe(restoredPid);
    expect(usr1PendingAndBlocked(restoredPid)).toEqual({ pending: true, blocked: true });
  }, 120_000);
});
