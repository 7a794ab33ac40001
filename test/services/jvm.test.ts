// A JVM with dozens of threads at its default heap: the dump succeeds, every thread runs afterwards, and the bundle
// verifies. Its mapped-but-untouched heap is what makes gcore slow, so this one is taken with --short-freeze.
import { afterAll, describe, expect, it } from 'vitest';
import { runSnap } from '../helpers/cli.js';
import { startHttpLoad, startJvm, stopAllServices, threadCount } from '../helpers/services/index.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, snapEnv } from './capture.js';

afterAll(stopAllServices);

describe('JVM', () => {
  it('dozens of threads, default heap: dump exit 0, every thread running after, the bundle verifies', async () => {
    const jvm = await startJvm();
    await jvm.ready;
    expect(threadCount(jvm.pid)).toBeGreaterThanOrEqual(30);
    const load = startHttpLoad(jvm.port, { concurrency: 2 });
    await load.waitForRequests(20);
    const d = await dumpService('jvm', jvm.pid, ['--short-freeze']);
    const result = expectDumpOk(d);
    const stats = await load.stop();
    expect(stats.failed).toBe(0);
    expectTreeRunning(jvm.pids());
    expect(result.processes[0]!.threads).toBeGreaterThanOrEqual(30);
    const verify = await runSnap(['verify', d.bundle], { env: snapEnv(), timeoutMs: 300_000 });
    expect(verify.exitCode, verify.stderr).toBe(0);
    recordCapture('jvm', result, stats.maxStallMs, { threads: result.processes[0]!.threads });
  });
});
