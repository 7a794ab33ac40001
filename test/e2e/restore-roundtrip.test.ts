// Round trips that criu can do and snap must not refuse or undo: a process holding a file it deleted and a memfd
// (criu carries both in its images), and one that starts and ends threads all the time (the thread count at the
// freeze is criu's, not the one snap saw before it). Each is dumped, killed, restored, and must go on working.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, readBundleManifest, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, readProcStat, readThreadStates, waitFor } from '../helpers/target.js';

let journalDir: string;
let outDir: string;
const pids: number[] = [];
beforeAll(() => {
  journalDir = makeTempDir('snap-roundtrip-journal-');
  outDir = makeTempDir('snap-roundtrip-out-');
});
afterEach(async () => {
  for (const pid of pids.splice(0)) await killPid(pid);
});
afterAll(removeTempDirs);

const env = () => ({ PROCSNAP_JOURNAL_DIR: journalDir });

/** python3 running `script` in a session of its own, stdio on /dev/null (criu needs no terminal for it). */
function startPython(script: string, args: string[]): ChildProcess {
  const child = spawn('/usr/bin/python3', ['-c', script, ...args], { detached: true, stdio: 'ignore' });
  pids.push(child.pid!);
  return child;
}

async function dumpKillRestore(pid: number): Promise<{ bundle: string; restoredPid: number }> {
  const bundle = join(outDir, `roundtrip-${pid}.snap.tar.zst`);
  const dump = await runSnap(['dump', String(pid), '-o', bundle, '--json'], { env: env() });
  expect(dump.exitCode, `snap dump failed:\n${dump.stderr}`).toBe(0);
  await killPid(pid);
  await waitFor(() => readProcStat(pid) === undefined, { what: `pid ${pid} to be gone` });
  const restore = await runSnap(['restore', bundle, '--allow-unsigned', '--json'], { env: env() });
  expect(restore.exitCode, `snap restore failed:\n${restore.stderr}`).toBe(0);
  const restoredPid = (JSON.parse(restore.stdout) as { pid: number }).pid;
  pids.push(restoredPid);
  return { bundle, restoredPid };
}

/** Reads a counter the script rewrites as it works: proof that it runs. */
const counter = (file: string): number => {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
};

describe('restore round trips of what criu carries itself', () => {
  it('a deleted open file and a memfd: restored with their contents, nothing to put back on the host', async () => {
    const dir = makeTempDir('snap-roundtrip-ghost-');
    const script = [
      'import os, sys, time',
      'd = sys.argv[1]',
      "f = open(os.path.join(d, 'ghost.txt'), 'w+'); f.write('ghost content\\n'); f.flush(); os.unlink(f.name)",
      "m = os.memfd_create('snap-memfd'); os.write(m, b'memfd content\\n')",
      "open(os.path.join(d, 'fds.tmp'), 'w').write(f'{f.fileno()} {m}\\n'); os.rename(os.path.join(d, 'fds.tmp'), os.path.join(d, 'fds'))",
      'while True: time.sleep(0.05)',
    ].join('\n');
    const child = startPython(script, [dir]);
    const [ghostFd, memFd] = await waitFor(() => existsSync(join(dir, 'fds')) && readFileSync(join(dir, 'fds'), 'utf8').trim().split(' ').map(Number), {
      what: 'the python to open its files',
    });
    expect(readlinkSync(`/proc/${child.pid}/fd/${ghostFd}`)).toBe(`${join(dir, 'ghost.txt')} (deleted)`);

    const { bundle, restoredPid } = await dumpKillRestore(child.pid!);
    expect(restoredPid).toBe(child.pid);
    const manifest = await readBundleManifest(bundle);
    expect(manifest.target.openFiles.map((f) => f.path)).toContain(`${join(dir, 'ghost.txt')} (deleted)`);
    expect(readlinkSync(`/proc/${restoredPid}/fd/${ghostFd}`)).toBe(`${join(dir, 'ghost.txt')} (deleted)`);
    expect(readFileSync(`/proc/${restoredPid}/fd/${ghostFd}`, 'utf8')).toBe('ghost content\n');
    expect(readlinkSync(`/proc/${restoredPid}/fd/${memFd}`)).toMatch(/^\/memfd:snap-memfd( \(deleted\))?$/);
    expect(readFileSync(`/proc/${restoredPid}/fd/${memFd}`, 'utf8')).toBe('memfd content\n');
    expect(existsSync(join(dir, 'ghost.txt')), 'the deleted file stays deleted on the host').toBe(false);
    expect(readThreadStates(restoredPid).every((s) => s !== 'T' && s !== 't'), 'the restored process runs').toBe(true);
  });

  it('a process that starts and ends threads all the time: dumped, restored with the threads the images hold, and it goes on starting them', async () => {
    const dir = makeTempDir('snap-roundtrip-threads-');
    const progress = join(dir, 'count');
    // Rounds of 4 threads that live a few milliseconds: the count changes between any two reads of /proc.
    const script = [
      'import os, sys, threading, time',
      'p = sys.argv[1]; n = 0',
      'def work(): time.sleep(0.003)',
      'while True:',
      '    ts = [threading.Thread(target=work) for _ in range(4)]',
      '    [t.start() for t in ts]',
      '    time.sleep(0.001)',
      '    [t.join() for t in ts]',
      '    n += 1',
      "    if n % 20 == 0: open(p + '.tmp', 'w').write(str(n)); os.rename(p + '.tmp', p)",
    ].join('\n');
    const child = startPython(script, [progress]);
    await waitFor(() => counter(progress) >= 40, { what: 'the python to start threads', timeoutMs: 15_000 });
    const threadsSeen = new Set<number>();
    for (let i = 0; i < 50 && threadsSeen.size < 2; i++) {
      threadsSeen.add(readThreadStates(child.pid!).length);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(threadsSeen.size, 'the thread count changes while it runs').toBeGreaterThan(1);

    const { restoredPid } = await dumpKillRestore(child.pid!);
    const after = counter(progress);
    await waitFor(() => counter(progress) > after + 20, { what: 'the restored python to go on starting threads', timeoutMs: 15_000 });
    expect(readProcStat(restoredPid)?.comm).toBe('python3');
  });
});
