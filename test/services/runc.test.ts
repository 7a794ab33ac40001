// A runc container (busybox rootfs; its own root, pid, mount, network, IPC and UTS namespaces) dumped from the host by
// its init's pid: the mounts runc bound in from the host are described to criu, the container keeps running, and
// after a kill `snap restore` brings it back into its root, counting on from the capture. `runc checkpoint
// --leave-running` on the same container is the anchor the closing note compares with. A container whose stdio are
// files on the host is refused before any signal: criu could not look them up.
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { killTree, processTree, startRuncContainer, stopAllServices } from '../helpers/services/index.js';
import { readProcStat, waitFor } from '../helpers/target.js';
import { runSnap } from '../helpers/cli.js';
import { dumpService, expectDumpOk, expectTreeRunning, recordCapture, restoreBundle, snapEnv, watchNeverStopped } from './capture.js';
import { readBundleManifest } from '../helpers/bundle.js';

afterAll(stopAllServices);

describe('runc container', () => {
  it('snap dump of its init from the host: the container runs on; then kill, snap restore, counting again from the capture', async () => {
    const box = await startRuncContainer({ tickMs: 20 });
    await box.ready;
    const pids = box.pids();

    // The anchor: runc's own checkpoint of the same container, leaving it running.
    const images = mkdtempSync(join(tmpdir(), 'snap-runc-images-'));
    const t0 = performance.now();
    await box.runc(['checkpoint', '--leave-running', '--image-path', images, '--work-path', images, box.id], 60_000);
    const runcMs = performance.now() - t0;
    await box.waitForCounter(3);

    const d = await dumpService('runc', box.pid);
    const result = expectDumpOk(d);
    expectTreeRunning(pids);
    const atDump = box.readCounter()!;
    await box.waitForCounter(5); // the container goes on counting after the dump
    expect((await box.state())?.status).toBe('running');
    const manifest = await readBundleManifest(d.bundle);
    expect(manifest.container?.rootfs).toBe(box.rootfs);
    expect(manifest.container?.externalMounts.length).toBeGreaterThan(0);
    expect(manifest.processes?.[0]).toMatchObject({ pid: 1, hostPid: box.pid });
    recordCapture('runc-container', result, null, { runcCheckpointLeaveRunningMs: Math.round(runcMs) });

    // Kill it (runc keeps the container's record and cgroups), then restore from the bundle.
    await box.runc(['kill', box.id, 'KILL']);
    await killTree(pids, { what: 'the container' });
    // A container comes back in its own namespaces, not sealed off by --isolate: refused, not pretended.
    const isolated = await runSnap(['restore', d.bundle, '--allow-unsigned', '--isolate'], { env: snapEnv() });
    expect(isolated.exitCode, isolated.stderr).toBe(12);
    expect(isolated.stderr).toContain('--isolate restores host processes only');
    const restored = await restoreBundle(d.bundle, []);
    expect(restored.run.exitCode, `snap restore failed:\n${restored.run.stderr}`).toBe(0);
    const rpid = restored.pid!;
    try {
      expect(readProcStat(rpid)?.comm).toBe('sh');
      const first = box.readCounter()!;
      // The restored container took up from the capture point: its count went back, then on.
      const later = await waitFor(() => {
        const now = box.readCounter();
        return now !== undefined && now > first + 3 ? now : undefined;
      }, { what: 'the restored container to count', timeoutMs: 10_000 });
      expect(later).toBeGreaterThan(first);
      expect(first).toBeLessThanOrEqual(atDump + 50);
    } finally {
      await killTree(processTree(rpid), { what: 'the restored container' });
    }
  });

  it('its stdout a file on the host: refused before any signal (exit 4) naming fd 1, the file and the way out; the container never stopped, no bundle, no journal', async () => {
    const box = await startRuncContainer({ tickMs: 20, hostStdio: true });
    await box.ready;
    const pids = box.pids();
    expect(pids.length).toBeGreaterThan(0);

    const { value: d, stoppedSeen } = await watchNeverStopped(pids, dumpService('runc-host-stdout', box.pid));
    expect(d.run.exitCode, d.run.stderr).toBe(4);
    const escaped = box.stdoutPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(d.run.stderr).toMatch(new RegExp(`process ${box.pid} \\(sh\\) fd 1 is ${escaped}\\b`));
    expect(d.run.stderr).toMatch(/the host's mount \d+/);
    expect(d.run.stderr).toMatch(/stdio as a pipe or a terminal/);
    expect(d.run.stderr).toMatch(new RegExp(`--core-only ${box.pid}\\b`));
    expect(d.run.stderr).not.toMatch(/Can't lookup mount/);
    expect(stoppedSeen, 'no process of the container was ever stopped').toEqual([]);
    expectTreeRunning(pids);
    expect(existsSync(d.bundle), 'no bundle').toBe(false);
    expect(readdirSync(dirname(d.bundle)).filter((f) => f.includes(`runc-host-stdout-${box.pid}`)), 'no partial bundle or work directory').toEqual([]);
    const journals = readdirSync(snapEnv().PROCSNAP_JOURNAL_DIR!).filter((f) => pids.some((p) => f.includes(`-${p}.`) || f.includes(`-${p}-`)));
    expect(journals, 'no journal or lock left for the container').toEqual([]);
    await box.waitForCounter(3); // it counts on
    expect((await box.state())?.status).toBe('running');
  });
});
