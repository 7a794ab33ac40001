// python3 -m http.server under load with connections in flight (accepted and still in the listen backlog): the dump
// succeeds with the options the tree needs, the server goes on answering, and the bundle restores after a kill.
import { truncateSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { httpGet, killTree, openIdleConnections, startHttpLoad, startPython, stopAllServices } from '../helpers/services/index.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, restoreBundle } from './capture.js';

afterAll(stopAllServices);

describe('python http.server', () => {
  it('under load with in-flight connections: dump exit 0, zero failed requests; a restore after its log grew is refused naming the file and its size at the freeze; cut back to it, the bundle restores and serves', async () => {
    const py = await startPython();
    await py.ready;
    const idle = await openIdleConnections(py.port, 6);
    const load = startHttpLoad(py.port, { concurrency: 2, keepAlive: false });
    await load.waitForRequests(20);
    const d = await dumpService('python', py.pid);
    const result = expectDumpOk(d);
    await load.waitForRequests(40, 20_000);
    const stats = await load.stop();
    await idle.close();
    expect(stats.errors).toEqual([]);
    expect(stats.failed).toBe(0);
    const options = result.criuOptions.map((c) => c.option);
    expect(options).toContain('--skip-in-flight');
    expectTreeRunning(py.pids());
    recordCapture('python-http.server', result, stats.maxStallMs);

    // http.server logs every request to stderr, so its log has grown since the dump, and criu restores a process only
    // if each file it had open has its size at the dump: snap refuses that restore before criu runs, naming the file.
    const pids = py.pids();
    await killTree(pids, { what: 'python' });
    const refused = await restoreBundle(d.bundle, pids);
    expect(refused.run.exitCode, refused.run.stderr).toBe(12);
    expect(refused.run.stderr).toMatch(/stderr\.log that the process had open changed size/);

    // The sizes snap holds the files to are criu's, from its images (taken at the freeze, under load): cut back to
    // that size, the log is as the process had it, and the bundle taken under load restores, connections and all.
    const named = /file (\S+stderr\.log) that the process had open changed size \((\d+) bytes now, (\d+) at dump\)/.exec(refused.run.stderr);
    expect(named, refused.run.stderr).not.toBeNull();
    truncateSync(named![1]!, Number(named![3]));
    const restored = await restoreBundle(d.bundle, pids);
    expect(restored.run.exitCode, `snap restore failed:\n${restored.run.stderr}`).toBe(0);
    try {
      expect((await httpGet(py.port, '/', 5000)).status).toBe(200);
    } finally {
      if (restored.pid) await killTree([restored.pid], { what: 'the restored python' });
    }
  });
});
