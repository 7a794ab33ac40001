// A failed tool's log is kept where logs belong (PROCSNAP_LOG_DIR here, /var/log/procsnap for root otherwise), private
// (0700 directory, 0600 files) and capped; a criu restore that hangs until its deadline keeps its log too, and the
// error names the file and what criu last said.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KEPT_LOGS_MAX_BYTES, KEPT_LOGS_MAX_FILES, keepLog, pruneKeptLogs } from '../../src/tools/kept-log.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { processExists, startTarget, waitFor } from '../helpers/target.js';

afterAll(removeTempDirs);

describe('kept logs', () => {
  it('go to PROCSNAP_LOG_DIR, 0700 directory and 0600 files, the newest 50 and 50 MiB at most', () => {
    const base = makeTempDir('snap-kept-');
    const dir = join(base, 'logs');
    const source = join(base, 'criu.log');
    writeFileSync(source, 'Error (criu/cr-restore.c:1): something\n');
    const saved = process.env['PROCSNAP_LOG_DIR'];
    process.env['PROCSNAP_LOG_DIR'] = dir;
    try {
      // 60 older logs, one second apart: the 10 oldest go when the next is kept.
      mkdirSync(dir, { recursive: true });
      for (let i = 0; i < 60; i++) {
        const p = join(dir, `snap-old-${String(i).padStart(2, '0')}.log`);
        writeFileSync(p, 'x');
        utimesSync(p, new Date(1_000_000 + i * 1000), new Date(1_000_000 + i * 1000));
      }
      const kept = keepLog(source, 'criu-restore')!;
      expect(kept.startsWith(dir + '/')).toBe(true);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(statSync(kept).mode & 0o777).toBe(0o600);
      const left = readdirSync(dir);
      expect(left.length).toBe(KEPT_LOGS_MAX_FILES);
      expect(left).toContain(kept.slice(dir.length + 1));
      expect(left).not.toContain('snap-old-00.log');
      expect(left).toContain('snap-old-59.log');
      // By size: three of 30 MiB (sparse) leave only the newest within 50 MiB.
      for (const [i, name] of ['snap-big-a.log', 'snap-big-b.log', 'snap-big-c.log'].entries()) {
        execFileSync('truncate', ['-s', `${30 << 20}`, join(dir, name)]);
        utimesSync(join(dir, name), new Date(Date.now() + (i + 1) * 10_000), new Date(Date.now() + (i + 1) * 10_000));
      }
      pruneKeptLogs(dir);
      const sizes = readdirSync(dir).map((n) => statSync(join(dir, n)).size);
      expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(KEPT_LOGS_MAX_BYTES);
      expect(readdirSync(dir)).toEqual(['snap-big-c.log']);
    } finally {
      if (saved === undefined) delete process.env['PROCSNAP_LOG_DIR'];
      else process.env['PROCSNAP_LOG_DIR'] = saved;
    }
  });

  it('a criu restore that hangs is killed at the deadline (exit 10): its log kept, named, with its last line', async () => {
    const dir = makeTempDir('snap-hang-');
    const logs = join(dir, 'logs');
    const env = { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-hang-journal-'), PROCSNAP_LOG_DIR: logs };
    const target = await startTarget({ threads: 1, group: 'setsid' });
    const bundle = join(dir, 'worker.tar.zst');
    expect((await runSnap(['dump', String(target.pid), '-o', bundle, '--quiet'], { env })).exitCode).toBe(0);
    await target.kill();
    // A criu that reports its version, then for a restore writes a line to its log and hangs, as criu does on images
    // it cannot finish.
    const fake = join(dir, 'criu');
    writeFileSync(fake, [
      '#!/bin/sh',
      'if [ "$1" = "--version" ]; then echo "Version: 99.0"; exit 0; fi',
      'while [ $# -gt 0 ]; do [ "$1" = "--log-file" ] && log="$2"; shift; done',
      'echo "(00.000100) pie: 1: Restoring creds, waiting for the other threads" >> "$log"',
      `echo $$ > ${join(dir, 'fake.pid')}`,
      'exec sleep 1000',
      '',
    ].join('\n'));
    chmodSync(fake, 0o755);
    const work = makeTempDir('snap-hang-work-');
    const run = await runSnap(['restore', bundle, '--allow-unsigned', '--criu', fake, '--work-dir', work, '--timeout', '6'], { env, timeoutMs: 40_000 });
    expect(run.timedOut, 'snap ended by itself').toBe(false);
    expect(run.exitCode, run.stderr).toBe(10);
    const line = run.stderr.split('\n').filter((l) => l.startsWith('snap:')).join(' ');
    expect(line).toMatch(/criu restore did not finish in time and was killed \(no error line; its log ends: .*Restoring creds, waiting for the other threads\)/);
    const kept = readdirSync(logs);
    expect(kept.length).toBe(1);
    expect(run.stderr).toContain(`criu's log: ${join(logs, kept[0]!)}`);
    expect(statSync(join(logs, kept[0]!)).mode & 0o777).toBe(0o600);
    expect(readdirSync(work)).toEqual([]);
    const criuPid = Number(readFileSync(join(dir, 'fake.pid'), 'utf8'));
    await waitFor(() => !processExists(criuPid), { what: 'the hung criu to be killed' });
  });
});
