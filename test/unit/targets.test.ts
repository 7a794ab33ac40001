// How a name becomes a tree root, decided from process tables, mountinfo text and CLI answers alone: which matches are
// roots and which are their workers, when a name is refused as ambiguous, when a pidfile is stale, where systemd
// lays a unit out, what runc's state means.
import { describe, expect, it } from 'vitest';
import { AmbiguousTargetError, NoSuchTargetError, TargetChangedError, TargetRefusedError, UsageError } from '../../src/errors.js';
import { cgroupCandidates, cgroupRoot, parseCgroupMounts } from '../../src/targets/cgroup.js';
import { parseRuncState, runcTarget, checkContainerId } from '../../src/targets/container.js';
import { targetSpec } from '../../src/targets/index.js';
import { resolveName } from '../../src/targets/name.js';
import type { ProcessEntry } from '../../src/targets/naming.js';
import { checkPidfile, parsePidfile } from '../../src/targets/pidfile.js';
import { ownLineage } from '../../src/targets/process-table.js';
import { treeRoots } from '../../src/targets/roots.js';
import { parseMainPid, systemdHierarchies, unitCgroupPath, unitName } from '../../src/targets/unit.js';

const p = (pid: number, ppid: number, comm: string, cmdline: string, state = 'S'): ProcessEntry => ({ pid, ppid, comm, cmdline, state, startTime: pid });

const table: ProcessEntry[] = [
  p(1, 0, 'init', '/sbin/init'),
  p(100, 1, 'sshd', '/usr/sbin/sshd -D'),
  p(200, 1, 'nginx', 'nginx: master process /usr/sbin/nginx'),
  p(201, 200, 'nginx', 'nginx: worker process'),
  p(202, 200, 'nginx', 'nginx: worker process'),
  p(300, 1, 'python3', '/usr/bin/python3 /srv/api/app.py --port 8080'),
  p(301, 300, 'sh', 'sh -c /usr/bin/python3 /srv/api/worker.py'),
  p(302, 301, 'python3', '/usr/bin/python3 /srv/api/worker.py'),
  p(400, 1, 'python3', '/usr/bin/python3 /srv/batch/run.py'),
  p(500, 1, 'bash', 'bash'),
  p(501, 500, 'node', 'node snap dump --name app.py'),
  p(600, 1, 'kworker/0:1', ''),
  p(700, 1, 'app.py', '', 'Z'),
];

describe('tree roots', () => {
  it('a master and its workers are one tree: only the master is a root', () => {
    const nginx = table.filter((e) => e.comm === 'nginx');
    expect(treeRoots(nginx, table).map((r) => r.pid)).toEqual([200]);
  });

  it('a match under another match through a non-matching process is still a worker of that root', () => {
    const py = table.filter((e) => e.pid === 300 || e.pid === 302);
    expect(treeRoots(py, table).map((r) => r.pid)).toEqual([300]);
  });

  it('an ancestor loop (pids reused while the table was read) ends the walk', () => {
    const loop = [p(10, 11, 'a', 'a'), p(11, 10, 'b', 'b')];
    expect(treeRoots([loop[0]!], loop).map((r) => r.pid)).toEqual([10]);
  });
});

describe('--name', () => {
  const exclude = new Set([500, 501]);

  it('by comm: the master, with what it matched on', () => {
    expect(resolveName('nginx', table, exclude)).toEqual({ pid: 200, naming: { by: 'name', value: 'nginx', via: 'comm', pid: 200 } });
  });

  it('by a pattern over the command line', () => {
    expect(resolveName('app\\.py', table, exclude).naming).toEqual({ by: 'name', value: 'app\\.py', via: 'cmdline pattern', pid: 300 });
  });

  it('snap itself and its ancestors, zombies and kernel threads never match', () => {
    expect(() => resolveName('kworker', table, exclude)).not.toThrow(AmbiguousTargetError);
    expect(() => resolveName('zzz-none', table, exclude)).toThrow(NoSuchTargetError);
    // 501's command line holds the name, 700 is a zombie of that comm: app.py is still only 300.
    expect(resolveName('app.py', table, exclude).pid).toBe(300);
  });

  it('two separate trees: refused, naming both with pid and command line', () => {
    let error: unknown;
    try {
      resolveName('python3', table, exclude);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AmbiguousTargetError);
    const e = error as AmbiguousTargetError;
    expect(e.exitCode).toBe(2);
    expect(e.matches).toEqual([300, 400]);
    expect(e.message).toContain('300 (/usr/bin/python3 /srv/api/app.py --port 8080)');
    expect(e.message).toContain('400 (/usr/bin/python3 /srv/batch/run.py)');
  });

  it('an invalid regular expression is matched as a comm only', () => {
    const t = [...table, p(800, 1, 'a(b', './a(b')];
    expect(resolveName('a(b', t, exclude).pid).toBe(800);
  });

  it('a comm longer than the kernel keeps is compared by its first 15 characters', () => {
    const t = [p(900, 1, 'averyverylongna', '/opt/x')];
    expect(resolveName('averyverylongname', t, new Set()).pid).toBe(900);
  });

  it("snap's own lineage is itself and every ancestor", () => {
    expect([...ownLineage(table, 501)].sort((a, b) => a - b)).toEqual([1, 500, 501]);
  });
});

describe('--pidfile', () => {
  it('the first line, digits only', () => {
    expect(parsePidfile('4242\n', 'f')).toBe(4242);
    expect(parsePidfile('  77  \nextra', 'f')).toBe(77);
    expect(() => parsePidfile('abc', 'f')).toThrow(UsageError);
    expect(() => parsePidfile('', 'f')).toThrow(UsageError);
    expect(() => parsePidfile('0', 'f')).toThrow(UsageError);
  });

  it('a process started before the file was written is the target', () => {
    expect(checkPidfile('/run/x.pid', { pid: 42, mtimeMs: 10_000 }, 9_000).pid).toBe(42);
  });

  it('a pid not running: not found; one started after the file was written: the pid was reused', () => {
    expect(() => checkPidfile('/run/x.pid', { pid: 42, mtimeMs: 10_000 }, undefined)).toThrow(NoSuchTargetError);
    expect(() => checkPidfile('/run/x.pid', { pid: 42, mtimeMs: 10_000 }, 60_000)).toThrow(TargetChangedError);
  });
});

const mountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;

describe('--cgroup and --unit', () => {
  const hierarchies = parseCgroupMounts(mountinfo);

  it('cgroup mounts: v2 first, then name=systemd, then the controllers', () => {
    expect(hierarchies.map((h) => [h.version, h.mountPoint, h.controllers.join(',')])).toEqual([
      [2, '/sys/fs/cgroup/unified', ''],
      [1, '/sys/fs/cgroup/systemd', 'name=systemd'],
      [1, '/sys/fs/cgroup/cpu', 'cpu'],
      [1, '/sys/fs/cgroup/memory', 'memory'],
    ]);
  });

  it('a directory under a mount is that hierarchy; a cgroup path is looked for in each', () => {
    expect(cgroupCandidates('/sys/fs/cgroup/memory/app', hierarchies)).toEqual([{ dir: '/sys/fs/cgroup/memory/app', hierarchy: hierarchies[3], rel: '/app' }]);
    expect(cgroupCandidates('/system.slice/a.service', hierarchies).map((c) => c.dir)).toEqual([
      '/sys/fs/cgroup/unified/system.slice/a.service',
      '/sys/fs/cgroup/systemd/system.slice/a.service',
      '/sys/fs/cgroup/cpu/system.slice/a.service',
      '/sys/fs/cgroup/memory/system.slice/a.service',
    ]);
    expect(() => cgroupCandidates('../../etc', hierarchies)).toThrow(UsageError);
  });

  it("the root of a cgroup's processes is the one whose parent is outside it; two such: refused", () => {
    const inside = [p(10, 1, 'app', 'app'), p(11, 10, 'app', 'app worker'), p(12, 11, 'sh', 'sh')];
    expect(cgroupRoot('the cgroup x', inside).pid).toBe(10);
    expect(() => cgroupRoot('the cgroup x', [...inside, p(20, 1, 'cron', 'cron')])).toThrow(AmbiguousTargetError);
    expect(() => cgroupRoot('the cgroup x', [p(30, 1, 'z', 'z', 'Z')])).toThrow(NoSuchTargetError);
  });

  it('a unit is NAME.service unless it names its type; systemd lays it out under system.slice', () => {
    expect(unitName('api')).toBe('api.service');
    expect(unitName('api.service')).toBe('api.service');
    expect(unitName('session-3.scope')).toBe('session-3.scope');
    expect(unitName('getty@tty1.service')).toBe('getty@tty1.service');
    expect(() => unitName('../etc')).toThrow(UsageError);
    expect(() => unitName('a/b')).toThrow(UsageError);
    expect(unitCgroupPath('api.service')).toBe('/system.slice/api.service');
    expect(systemdHierarchies(hierarchies).map((h) => h.mountPoint)).toEqual(['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd']);
  });

  it("systemctl's MainPID: a pid, 0, or nothing", () => {
    expect(parseMainPid('4242\n')).toBe(4242);
    expect(parseMainPid('0\n')).toBe(0);
    expect(parseMainPid('')).toBeUndefined();
  });
});

describe('--container', () => {
  it("runc's state: a running container is its init; a paused one is refused; a stopped one is not found", () => {
    const running = parseRuncState('{"ociVersion":"1.0.2","id":"c1","pid":4242,"status":"running","bundle":"/b"}')!;
    expect(runcTarget('c1', '/run/runc', running)).toEqual({ pid: 4242, naming: { by: 'container', value: 'c1', via: 'runc state (root /run/runc)', pid: 4242 } });
    expect(() => runcTarget('c1', '/run/runc', { pid: 4242, status: 'paused' })).toThrow(TargetRefusedError);
    expect(() => runcTarget('c1', '/run/runc', { pid: 0, status: 'stopped' })).toThrow(NoSuchTargetError);
    expect(parseRuncState('container "c1" does not exist')).toBeUndefined();
  });

  it('an id is a name, never a path or an option', () => {
    expect(checkContainerId('web-1_a.b')).toBe('web-1_a.b');
    expect(() => checkContainerId('--root')).toThrow(UsageError);
    expect(() => checkContainerId('../x')).toThrow(UsageError);
  });
});

describe('one way of naming the target', () => {
  const parsePid = (raw: string) => Number(raw);
  it('a pid or one flag; none or two is a usage error', () => {
    expect(targetSpec({ pid: '42' }, parsePid)).toEqual({ kind: 'pid', pid: 42 });
    expect(targetSpec({ unit: 'a.service' }, parsePid)).toEqual({ kind: 'unit', unit: 'a.service' });
    expect(() => targetSpec({}, parsePid)).toThrow(UsageError);
    expect(() => targetSpec({ pid: '42', name: 'x' }, parsePid)).toThrow(/named twice/);
    expect(() => targetSpec({ name: 'x', runcRoot: '/r' }, parsePid)).toThrow(UsageError);
  });
});
