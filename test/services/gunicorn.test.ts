// A busy preforking tree: gunicorn (Debian's) with 100 sync workers under a per-request load on 127.0.0.1. New
// connections arrive all through the freeze (accepted by a worker after the preflight looked, or waiting in the
// shared accept queue): ten dumps in a row succeed, no request fails, no process is left stopped, and the last bundle
// restores after the tree is killed and serves.
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { httpGet, killTree, startHttpLoad, stopAllServices } from '../helpers/services/index.js';
import { startGunicorn } from '../helpers/services/gunicorn.js';
import { record } from '../helpers/faults.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, restoreBundle } from './capture.js';

afterAll(stopAllServices);

const WORKERS = 100;
const DUMPS = 10;

describe(`gunicorn with ${WORKERS} workers under per-request load`, () => {
  it(`${DUMPS} dumps in a row exit 0 with no failed request and no process left stopped; the last bundle restores and serves`, async () => {
    const g = await startGunicorn({ workers: WORKERS });
    await g.ready;
    // A request waits out a freeze (seconds for 101 processes on a busy host): a slow answer is not a failed one.
    const load = startHttpLoad(g.port, { concurrency: 4, keepAlive: false, expectBody: g.content, timeoutMs: 60_000 });
    await load.waitForRequests(50);
    const freezes: number[] = [];
    let last: string | undefined;
    for (let i = 0; i < DUMPS; i++) {
      // The root's core only: the workers' cores are not what this test is about, and 101 of them ten times is minutes.
      const d = await dumpService('gunicorn', g.pid, ['--cores', 'root']);
      const result = expectDumpOk(d);
      expect(result.processes.length).toBeGreaterThan(WORKERS);
      freezes.push(result.freezeWindowMs);
      expectTreeRunning(g.pids());
      // Each bundle is about 400 MiB: only the last is kept, for the restore.
      if (last) rmSync(last, { force: true });
      last = d.bundle;
      if (i === DUMPS - 1) recordCapture('gunicorn-100', result, null);
    }
    await load.waitForRequests(20, 30_000);
    const served = await load.stop();
    expect(served.errors).toEqual([]);
    expect(served.failed).toBe(0);
    record(`gunicorn ${WORKERS} workers: ${DUMPS} dumps, freeze ${Math.min(...freezes).toFixed(0)}-${Math.max(...freezes).toFixed(0)} ms, ${served.ok} requests, 0 failed`);

    const pids = g.pids();
    await killTree(pids, { what: 'gunicorn' });
    const restored = await restoreBundle(last!, pids);
    expect(restored.run.exitCode, `snap restore failed:\n${restored.run.stderr}`).toBe(0);
    try {
      const reply = await httpGet(g.port, '/', 10_000);
      expect(reply.status).toBe(200);
      expect(reply.body).toBe(g.content);
    } finally {
      if (restored.pid) await killTree([restored.pid, ...pids.filter((p) => p !== restored.pid)], { what: 'the restored gunicorn' }).catch(() => undefined);
      rmSync(last!, { force: true });
    }
  }, 900_000);
});
