// `snap dump` given a name instead of a pid: --name, --pidfile, --cgroup, --unit (through a cgroup laid out as systemd
// does), --container (a runc container). Each picks the tree's root, records how it was named in the manifest, and
// leaves the target running; a name matching two trees is refused before any signal, naming both.
import { existsSync, mkdirSync, rmdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import { makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { killStarted, startSleeper, stateOf } from '../helpers/named-processes.js';
import { startRuncContainer, stopAllServices } from '../helpers/services/index.js';

let journalDir: string;
let out: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
  out = makeTempDir('snap-test-targets-');
});
afterAll(async () => {
  await killStarted();
  await stopAllServices();
  removeTempDirs();
});

const marker = (what: string) => `procsnap-target-${what}-${process.pid}-${Date.now()}`;

async function dump(args: string[], name: string): Promise<SnapResult> {
  return runSnap(['dump', ...args, '-o', join(out, `${name}.tar.zst`), '--json', '-q'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
}

async function expectDumped(run: SnapResult, pid: number): Promise<DumpResult> {
  expect(run.exitCode, `snap dump failed:\n${run.stderr}`).toBe(0);
  const result = JSON.parse(run.stdout) as DumpResult;
  expect(result.pid).toBe(pid);
  expect(stateOf(pid), 'the target runs on').not.toBe('T');
  return result;
}

describe('dump --name', () => {
  it('a master with two workers of the same command line: the master is dumped with its workers, the name recorded', async () => {
    const m = marker('name');
    const tree = await startSleeper(m, 2);
    const run = await dump(['--name', m], 'name');
    const result = await expectDumped(run, tree.pid);
    expect(result.processes.map((p) => p.hostPid ?? p.pid).sort()).toEqual([tree.pid, ...tree.workers].sort());
    const manifest = await readBundleManifest(result.bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.targetNaming).toEqual({ by: 'name', value: m, via: 'cmdline pattern', pid: tree.pid });
    for (const w of tree.workers) expect(stateOf(w)).not.toBe('T');
  });

  it('two separate trees match: refused with exit 2, both listed with pid and command line, neither touched', async () => {
    const m = marker('twice');
    const a = await startSleeper(m);
    const b = await startSleeper(m);
    const run = await dump(['--name', m], 'twice');
    expect(run.exitCode, run.stderr).toBe(2);
    expect(run.stderr).toContain(`${a.pid} (/usr/bin/python3 -c`);
    expect(run.stderr).toContain(`${b.pid} (/usr/bin/python3 -c`);
    expect(run.stderr).toMatch(/matches 2 separate process trees/);
    const error = (JSON.parse(run.stdout) as { error: { kind: string; message: string } }).error;
    expect(error.kind).toBe('usage');
    expect(error.message, 'one line, whatever the command lines hold').not.toContain('\n');
    expect([stateOf(a.pid), stateOf(b.pid)]).toEqual(['S', 'S']);
  });

  it('a name nothing matches: exit 3', async () => {
    const run = await dump(['--name', marker('nobody')], 'nobody');
    expect(run.exitCode, run.stderr).toBe(3);
    expect(run.stderr).toMatch(/no process is named/);
  });
});

describe('dump --pidfile', () => {
  it("the pid in the file, when its process started before the file was written", async () => {
    const t = await startSleeper(marker('pidfile'));
    const file = join(out, 'service.pid');
    writeFileSync(file, `${t.pid}\n`);
    const result = await expectDumped(await dump(['--pidfile', file], 'pidfile'), t.pid);
    const manifest = await readBundleManifest(result.bundle);
    expect(manifest.targetNaming).toMatchObject({ by: 'pidfile', value: file, pid: t.pid });
  });

  it('a pidfile written before its pid was started (a stale file, the pid reused): exit 9, nothing sent', async () => {
    const t = await startSleeper(marker('stale'));
    const file = join(out, 'stale.pid');
    writeFileSync(file, `${t.pid}\n`);
    const hourAgo = new Date(Date.now() - 3600_000);
    utimesSync(file, hourAgo, hourAgo);
    const run = await dump(['--pidfile', file], 'stale');
    expect(run.exitCode, run.stderr).toBe(9);
    expect(run.stderr).toMatch(/started .* after the file was written/);
    expect(stateOf(t.pid)).toBe('S');
  });

  it('a pidfile naming a pid that is not running: exit 3; a huge file: exit 2', async () => {
    const file = join(out, 'gone.pid');
    writeFileSync(file, '4194000\n');
    const run = await dump(['--pidfile', file], 'gone');
    expect(run.exitCode, run.stderr).toBe(3);
    const huge = join(out, 'huge.pid');
    writeFileSync(huge, '1'.repeat(100_000));
    const big = await dump(['--pidfile', huge], 'huge');
    expect(big.exitCode, big.stderr).toBe(2);
    expect(big.stderr).toMatch(/more than a pidfile does/);
  });
});

/** A cgroup made for one test in a v1 hierarchy, the given processes moved in; removed (processes moved back) after. */
function makeCgroup(dir: string, pids: number[]): () => void {
  const made: string[] = [];
  let d = dir;
  const missing: string[] = [];
  while (!existsSync(d)) {
    missing.unshift(d);
    d = join(d, '..');
  }
  for (const m of missing) {
    mkdirSync(m);
    made.unshift(m);
  }
  for (const pid of pids) writeFileSync(join(dir, 'cgroup.procs'), String(pid));
  return () => {
    const root = dir.split('/').slice(0, 5).join('/'); // /sys/fs/cgroup/HIERARCHY
    for (const pid of pids) {
      try {
        writeFileSync(join(root, 'cgroup.procs'), String(pid));
      } catch {
        // gone
      }
    }
    for (const m of made) rmdirSync(m);
  };
}

describe('dump --cgroup and --unit', () => {
  it('the root of the processes in a v1 cgroup, named as /proc/PID/cgroup shows it', async () => {
    const t = await startSleeper(marker('cgroup'), 1);
    const name = `procsnap-test-${process.pid}-cg`;
    const remove = makeCgroup(`/sys/fs/cgroup/pids/${name}`, [t.pid, ...t.workers]);
    try {
      const result = await expectDumped(await dump(['--cgroup', `/${name}`], 'cgroup'), t.pid);
      const manifest = await readBundleManifest(result.bundle);
      expect(manifest.targetNaming).toEqual({ by: 'cgroup', value: `/${name}`, via: `cgroup v1 pids /${name}`, pid: t.pid });
      // The same cgroup by its directory.
      const again = await expectDumped(await dump(['--cgroup', `/sys/fs/cgroup/pids/${name}`], 'cgroup-dir'), t.pid);
      expect(again.processes).toHaveLength(2);
    } finally {
      remove();
    }
  });

  it('a cgroup holding two separate roots: refused, naming both', async () => {
    const a = await startSleeper(marker('cg-a'));
    const b = await startSleeper(marker('cg-b'));
    const name = `procsnap-test-${process.pid}-two`;
    const remove = makeCgroup(`/sys/fs/cgroup/pids/${name}`, [a.pid, b.pid]);
    try {
      const run = await dump(['--cgroup', `/${name}`], 'cgroup-two');
      expect(run.exitCode, run.stderr).toBe(2);
      expect(run.stderr).toContain(`${a.pid} (`);
      expect(run.stderr).toContain(`${b.pid} (`);
    } finally {
      remove();
    }
  });

  it("--unit without systemd: the root of the unit's cgroup as systemd lays it out (name=systemd, system.slice)", async () => {
    const t = await startSleeper(marker('unit'), 1);
    const unit = `procsnap-test-${process.pid}.service`;
    const remove = makeCgroup(`/sys/fs/cgroup/systemd/system.slice/${unit}`, [t.pid, ...t.workers]);
    try {
      const result = await expectDumped(await dump(['--unit', unit], 'unit'), t.pid);
      const manifest = await readBundleManifest(result.bundle);
      expect(manifest.targetNaming).toEqual({ by: 'unit', value: unit, via: `cgroup v1 name=systemd /system.slice/${unit}`, pid: t.pid });
    } finally {
      remove();
    }
  });
});

const hasRunc = spawnSync('runc', ['--version']).status === 0;

describe.skipIf(!hasRunc)('dump --container', () => {
  it("a runc container by its id: its init, from runc's state", async () => {
    const box = await startRuncContainer();
    await box.ready;
    const result = await expectDumped(await dump(['--container', box.id, '--runc-root', box.stateDir], 'container'), box.pid);
    const manifest = await readBundleManifest(result.bundle);
    expect(manifest.targetNaming).toEqual({ by: 'container', value: box.id, via: `runc state (root ${box.stateDir})`, pid: box.pid });
    expect((await box.state())?.status).toBe('running');
  });
});
