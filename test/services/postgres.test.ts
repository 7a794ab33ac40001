// PostgreSQL, a postmaster and its children, running as the postgres user with SysV shared memory in the host's IPC
// namespace. Where this host rules the checkpoint out, the refusal comes before any signal and names why, and
// --core-only takes every process's core; afterwards every process runs and a client's INSERT and CHECKPOINT succeed.
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { startPostgres, stopAllServices } from '../helpers/services/index.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, watchNeverStopped } from './capture.js';
import { hostHasSysResource } from '../helpers/capabilities.js';

afterAll(stopAllServices);

const hasSysResource = hostHasSysResource();

describe('PostgreSQL', () => {
  it.skipIf(hasSysResource)('the checkpoint is refused before any signal (another uid without CAP_SYS_RESOURCE); --core-only works and INSERT and CHECKPOINT succeed after', async () => {
    const pg = await startPostgres();
    await pg.ready;
    await pg.psql('create table t (n int)');
    const pids = pg.pids();
    const { value: d, stoppedSeen } = await watchNeverStopped(pids, dumpService('postgres', pg.pid));
    expect(d.run.exitCode, d.run.stderr).toBe(4);
    expect(d.run.stderr).toMatch(/CAP_SYS_RESOURCE|SysV/);
    expect(d.run.stderr).toMatch(/--core-only/);
    expect(stoppedSeen).toEqual([]);

    const coreOnly = await dumpService('postgres', pg.pid, ['--core-only']);
    const result = expectDumpOk(coreOnly);
    expectTreeRunning(pids.filter((p) => readFileSafe(`/proc/${p}/stat`)));
    expect(result.processes.length).toBeGreaterThanOrEqual(5); // the postmaster and its auxiliaries
    for (const p of result.processes) expect(p.core, `process ${p.pid} (${p.comm})`).toBe(`core.${p.pid}`);
    await pg.psql('insert into t values (1)');
    await pg.psql('checkpoint');
    expect((await pg.psql('select count(*) from t')).trim()).toMatch(/1/);
    recordCapture('postgres-core-only', result, null);
  });
});

function readFileSafe(path: string): boolean {
  try {
    readFileSync(path);
    return true;
  } catch {
    return false;
  }
}
