// MariaDB from Debian with its defaults (InnoDB on io_uring, an 8 TiB buffer-pool reservation) under a client doing
// INSERTs on one connection: the checkpoint is refused before any signal, naming io_uring; --core-only takes a core
// of the server that opens in gdb with every thread, and the client sees nothing but the freeze.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { startMariaDb, startMysqlInsertClient, stopAllServices } from '../helpers/services/index.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, snapEnv, watchNeverStopped } from './capture.js';

const execFileAsync = promisify(execFile);

afterAll(stopAllServices);

describe('MariaDB', () => {
  it('io_uring: the checkpoint is refused before any signal; --core-only gives a core that opens in gdb, and the INSERT loop sees no error', async () => {
    const db = await startMariaDb();
    await db.ready;
    await db.sql('create database snap; create table snap.t (n int not null) engine=InnoDB');
    const client = await startMysqlInsertClient(db.port, { table: 'snap.t', replyTimeoutMs: 10_000 });
    await client.waitForOps(100, 30_000);

    const pids = db.pids();
    const { value: refused, stoppedSeen } = await watchNeverStopped(pids, dumpService('mariadb', db.pid));
    expect(refused.run.exitCode, refused.run.stderr).toBe(4);
    expect(refused.run.stderr).toMatch(/io_uring/);
    expect(refused.run.stderr).toMatch(/--core-only/);
    expect(stoppedSeen).toEqual([]);
    await client.waitForOps(50, 30_000);

    const coreOnly = await dumpService('mariadb', db.pid, ['--core-only']);
    const result = expectDumpOk(coreOnly);
    expect(result.finalState).toBe('running');
    expectTreeRunning(db.pids());
    // The same connection goes on inserting after the freeze, every reply an OK for one row.
    await client.waitForOps(200, 30_000);
    const stats = await client.stop();
    expect(stats.errorMessages).toEqual([]);
    expect(stats.errors).toBe(0);
    expect(stats.reconnects).toBe(0);
    expect(Number(await db.sql('select count(*) from snap.t'))).toBeGreaterThanOrEqual(stats.ops);

    expect(result.processes.map((p) => p.pid)).toEqual(pids);
    const dir = makeTempDir('snap-svc-mariadb-');
    for (const p of result.processes) {
      expect(p.core, `process ${p.pid} (${p.comm})`).toBe(`core.${p.pid}`);
      const core = join(dir, `core.${p.pid}`);
      const written = await runSnap(['core', coreOnly.bundle, '--pid', String(p.pid), '-o', core], { env: snapEnv() });
      expect(written.exitCode, written.stderr).toBe(0);
      const { stdout } = await execFileAsync('gdb', ['--nx', '--batch', '-ex', 'info threads', '/usr/sbin/mariadbd', core], { maxBuffer: 1 << 24 });
      const lwps = [...stdout.matchAll(/^\*?\s+\d+\s+Thread 0x[0-9a-f]+ \(LWP (\d+)\)/gm)].map((m) => Number(m[1]));
      expect(lwps.sort((a, b) => a - b), stdout).toEqual([...p.tids].sort((a, b) => a - b));
    }
    recordCapture('mariadb-core-only', result, stats.maxStallMs);
  });
});
