// A Node 24 HTTP server: libuv opens io_uring, which criu cannot checkpoint. snap refuses before any signal, naming
// io_uring and --core-only, and --core-only takes the core while the server keeps answering.
import { afterAll, describe, expect, it } from 'vitest';
import { httpGet, startHttpLoad, startNodeServer, stopAllServices } from '../helpers/services/index.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, watchNeverStopped } from './capture.js';

afterAll(stopAllServices);

describe('Node 24 HTTP server', () => {
  it('refused before any signal naming io_uring (never T); --core-only works', async () => {
    const node = await startNodeServer();
    await node.ready;
    const pids = node.pids();
    const { value: d, stoppedSeen } = await watchNeverStopped(pids, dumpService('node', node.pid));
    expect(d.run.exitCode, d.run.stderr).toBe(4);
    expect(d.run.stderr).toMatch(/io_uring/);
    expect(d.run.stderr).toMatch(/--core-only/);
    expect(stoppedSeen).toEqual([]);

    const load = startHttpLoad(node.port, { concurrency: 2 });
    await load.waitForRequests(20);
    const coreOnly = await dumpService('node', node.pid, ['--core-only']);
    const result = expectDumpOk(coreOnly);
    const stats = await load.stop();
    // gcore of a Node process writes every mapping it has (about 1 GiB here): requests may time out during that
    // freeze. What matters after it: the same server, running, answering.
    expectTreeRunning(pids);
    expect((await httpGet(node.port, '/', 5000)).status).toBe(200);
    expect(result.processes[0]?.core).toBe(`core.${node.pid}`);
    recordCapture('node-core-only', result, stats.maxStallMs, { failedRequests: stats.failed });
  });
});
