// A service whose master forks a child every few milliseconds that exits at once (a CGI-style worker, criu's zdtm
// fork tests): children that finish by themselves during a dump are the service's own life, not damage the capture
// did. Every dump must succeed (or fail for a reason of its own, never exit 15), every bundle must read back
// without a schema problem (a zombie criu dumped is recorded as exited, with no thread id), and the master runs on.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

const journalDir = makeTempDir('snap-forker-journal-');
const outDir = makeTempDir('snap-forker-out-');
const pids: number[] = [];
afterAll(async () => {
  for (const pid of pids.splice(0)) await killPid(pid);
  removeTempDirs();
});

// Forks a child that exits with status 0 at once, every 3 ms, and reaps them in batches: at any moment some
// children are running, some are zombies, some are gone.
const FORKER = [
  'import os, time',
  'while True:',
  '    if os.fork() == 0:',
  '        os._exit(0)',
  '    time.sleep(0.003)',
  '    try:',
  '        while os.waitpid(-1, os.WNOHANG)[0] > 0: pass',
  '    except ChildProcessError: pass',
].join('\n');

describe('a master forking short-lived children', () => {
  it('ten dumps: each exits 0 (never 15), each bundle reads back, the master runs on', async () => {
    const child = spawn('/usr/bin/python3', ['-c', FORKER], { detached: true, stdio: 'ignore' });
    const pid = child.pid!;
    pids.push(pid);
    await waitFor(() => readProcStat(pid)?.state !== undefined, { what: 'the forker to start' });
    const codes: number[] = [];
    let exitedRecords = 0;
    for (let i = 0; i < 10; i++) {
      const bundle = join(outDir, `forker-${i}.snap`);
      const dump = await runSnap(['dump', String(pid), '-o', bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
      codes.push(dump.exitCode ?? -1);
      expect(dump.exitCode, `dump ${i}:\n${dump.stderr}`).not.toBe(15);
      expect(dump.exitCode, `dump ${i}:\n${dump.stderr}`).toBe(0);
      const inspect = await runSnap(['inspect', bundle, '--json']);
      expect(inspect.exitCode, `inspect ${i}:\n${inspect.stderr}`).toBe(0);
      const manifest = await readBundleManifest(bundle);
      // snap inspect checked the manifest against its schema; the helper knows the schemas up to v3.
      if (manifest.schemaVersion <= 3) expect(schemaProblems(manifest), `bundle ${i}`).toEqual([]);
      for (const p of manifest.processes ?? []) {
        expect(p.tids.every((t) => t >= 1), `process ${p.pid} of bundle ${i}: ${JSON.stringify(p.tids)}`).toBe(true);
        if (p.exited) {
          exitedRecords++;
          expect(p.threads).toBe(0);
          expect(p.tids).toEqual([]);
        }
      }
      const state = readProcStat(pid)?.state;
      expect(state && state !== 'T' && state !== 'Z', `master after dump ${i}: ${state}`).toBe(true);
    }
    console.log(`exit codes ${codes.join(' ')}; zombies recorded as exited: ${exitedRecords}`);
  }, 300_000);
});
