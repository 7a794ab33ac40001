// The watch's decisions without a process: each trigger's "did it fire" over samples, the units people write, the
// memory cgroup of a /proc/PID/cgroup text, a probe against servers that answer, fail and hang, and the loop with a
// fake capture (count, cooldown, a locked tree skipped, a stop asked for, a target followed through a restart); and the
// systemd unit that runs the watch as a service; one poll's /proc readings of a real tree.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { LockedError, UsageError } from '../../src/errors.js';
import { captureIdentity } from '../../src/process/identity.js';
import { parseCgroupMounts } from '../../src/targets/cgroup.js';
import { fullest, memoryCgroupOf, parseLimit } from '../../src/watch/cgroup-memory.js';
import { cpuPercent, cpuTrigger } from '../../src/watch/cpu.js';
import { watch, type WatchEvent } from '../../src/watch/loop.js';
import { PollReadings } from '../../src/watch/proc-readings.js';
import { captureName, planWatch } from '../../src/watch/plan.js';
import { parseProbe, probeOnce, probeTrigger } from '../../src/watch/probe.js';
import { rssTrigger } from '../../src/watch/rss.js';
import { parseSignal } from '../../src/watch/signal.js';
import { extendRun, MAX_SAMPLES, type Sample, type Trigger } from '../../src/watch/trigger.js';
import { parseDuration, parsePercent, parseSize, parseUntil } from '../../src/watch/units.js';

/** Feeds values one a second through a trigger's run; returns the index at which it fired, or -1. */
function firesAt(t: Trigger, values: (number | null)[]): number {
  let run: Sample[] = [];
  for (let i = 0; i < values.length; i++) {
    const s = { at: i * 1000, value: values[i]! };
    run = extendRun(run, s, t.crosses(s));
    if (t.fired(run)) return i;
  }
  return -1;
}

describe('units', () => {
  it('durations, sizes, percents', () => {
    expect(parseDuration('2s', '--for')).toBe(2000);
    expect(parseDuration('500ms', '--for')).toBe(500);
    expect(parseDuration('1.5m', '--for')).toBe(90_000);
    expect(parseDuration('3', '--for')).toBe(3000);
    expect(() => parseDuration('soon', '--for')).toThrow(UsageError);
    expect(parseSize('200M', '--rss')).toBe(200 * 1024 ** 2);
    expect(parseSize('1.5GiB', '--rss')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('4096', '--rss')).toBe(4096);
    expect(() => parseSize('lots', '--rss')).toThrow(UsageError);
    expect(parsePercent('80%', '--cpu')).toBe(80);
    expect(() => parsePercent('0', '--cpu')).toThrow(UsageError);
    expect(() => parsePercent('120', '--cgroup-memory')).toThrow(UsageError);
  });

  it('--until: a duration from now, the next such time of day, or a date-time', () => {
    const now = new Date('2026-12-07T11:00:00');
    expect(parseUntil('30m', now)).toBe(now.getTime() + 1_800_000);
    expect(new Date(parseUntil('06:00', now)).toString()).toBe(new Date('2026-12-08T06:00:00').toString());
    expect(new Date(parseUntil('12:30', now)).toString()).toBe(new Date('2026-12-07T12:30:00').toString());
    expect(parseUntil('2026-12-08T06:00:00Z', now)).toBe(Date.parse('2026-12-08T06:00:00Z'));
    expect(() => parseUntil('tomorrow', now)).toThrow(UsageError);
  });

  it("a bundle's name says the trigger and the capture", () => {
    expect(captureName('snap-python3-4242-20261207T110000Z.tar.zst', 4242, 'cpu', 2)).toBe('snap-python3-4242-cpu-2-20261207T110000Z.tar.zst');
  });
});

describe('cpu', () => {
  it('percent of one CPU from the ticks of each process between two readings', () => {
    const prev = { at: 0, ticks: new Map([[1, 100], [2, 50]]) };
    // 1 spent 100 ticks (1 s) in 1 s, 2 spent 50, 3 is new with 10, one gone counts no more.
    expect(cpuPercent(prev, { at: 1000, ticks: new Map([[1, 200], [2, 100], [3, 10]]) })).toBe(160);
    expect(cpuPercent(undefined, { at: 1000, ticks: new Map() })).toBeNull();
  });

  it('--cpu 80 --for 2s fires on the third second above, not before; a dip starts over', () => {
    expect(firesAt(cpuTrigger(80, 2000), [10, 95, 99, 97, 99])).toBe(3);
    expect(firesAt(cpuTrigger(80, 2000), [95, 99, 20, 99, 99, 99])).toBe(5);
    expect(firesAt(cpuTrigger(80, 2000), [95, null, 99, 99])).toBe(-1);
    expect(firesAt(cpuTrigger(80, 0), [10, 81])).toBe(1);
  });

  it('--cpu-below fires on a stall', () => {
    expect(firesAt(cpuTrigger(5, 1000, true), [50, 1, 0])).toBe(2);
  });
});

describe('rss and the run', () => {
  it('--rss 200M fires at the first sample at or above it', () => {
    expect(firesAt(rssTrigger(200 * 1024 ** 2, 0), [100 * 1024 ** 2, 180 * 1024 ** 2, 220 * 1024 ** 2])).toBe(2);
  });

  it('a long run keeps its first sample (when it began) and at most MAX_SAMPLES', () => {
    let run: Sample[] = [];
    for (let i = 0; i < 200; i++) run = extendRun(run, { at: i * 1000, value: 1 }, true);
    expect(run).toHaveLength(MAX_SAMPLES);
    expect(run[0]!.at).toBe(0);
    expect(run.at(-1)!.at).toBe(199_000);
  });
});

const mountinfo = `35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;

describe('cgroup memory', () => {
  it("v1's memory hierarchy where there is one, else v2's", () => {
    const h = parseCgroupMounts(mountinfo);
    expect(memoryCgroupOf('9:name=systemd:/\n4:memory:/app/leak\n0::/', h)).toEqual({ version: 1, mountPoint: '/sys/fs/cgroup/memory', dir: '/sys/fs/cgroup/memory/app/leak' });
    expect(memoryCgroupOf('0::/system.slice/a.service', h)).toEqual({ version: 2, mountPoint: '/sys/fs/cgroup/unified', dir: '/sys/fs/cgroup/unified/system.slice/a.service' });
  });

  it('limits: bytes, or none; the fullest level with a limit is the value', () => {
    expect(parseLimit('104857600\n')).toBe(104857600);
    expect(parseLimit('max\n')).toBeUndefined();
    expect(parseLimit('9223372036854771712')).toBeUndefined();
    const f = fullest([
      { dir: '/leaf', usage: 50, limit: undefined },
      { dir: '/parent', usage: 90, limit: 100 },
      { dir: '/', usage: 1000, limit: undefined },
    ]);
    expect(f).toMatchObject({ percent: 90, level: { dir: '/parent' } });
    expect(fullest([{ dir: '/', usage: 5, limit: undefined }])).toBeNull();
  });
});

const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

async function serve(handler: (path: string, res: import('node:http').ServerResponse) => void): Promise<number> {
  const server = createServer((req, res) => handler(req.url ?? '/', res));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

describe('probe', () => {
  it('http:// and tcp:// only', () => {
    expect(parseProbe('tcp://127.0.0.1:5432')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 5432 });
    expect(parseProbe('http://127.0.0.1:8080/health').kind).toBe('http');
    expect(() => parseProbe('https://x/')).toThrow(UsageError);
    expect(() => parseProbe('nonsense')).toThrow(UsageError);
  });

  it('a 200 passes, a 503 fails, a hung handler fails at the timeout, a closed port fails', async () => {
    const port = await serve((path, res) => {
      if (path === '/ok') res.end('ok');
      else if (path === '/down') {
        res.statusCode = 503;
        res.end();
      } // anything else hangs
    });
    expect((await probeOnce(parseProbe(`http://127.0.0.1:${port}/ok`), 2000)).value).not.toBeNull();
    expect(await probeOnce(parseProbe(`http://127.0.0.1:${port}/down`), 2000)).toMatchObject({ value: null, detail: expect.stringMatching(/HTTP 503/) });
    expect(await probeOnce(parseProbe(`http://127.0.0.1:${port}/hang`), 300)).toEqual({ value: null, detail: 'no answer within 300 ms' });
    expect((await probeOnce(parseProbe(`tcp://127.0.0.1:${port}`), 2000)).value).not.toBeNull();
    const closed = await serve(() => undefined);
    servers.at(-1)!.close();
    expect((await probeOnce(parseProbe(`tcp://127.0.0.1:${closed}`), 2000)).value).toBeNull();
  });

  it('--failures 3: three failures in a row fire it; a pass between starts over', () => {
    const t = probeTrigger('tcp://127.0.0.1:1', 1000, 3, 0);
    expect(firesAt(t, [null, null, 5, null, null, null])).toBe(5);
  });
});

describe('signals and the plan', () => {
  it('USR1, USR2, HUP; never TERM or INT, which end the watch', () => {
    expect(parseSignal('USR1')).toBe('SIGUSR1');
    expect(parseSignal('sigusr2')).toBe('SIGUSR2');
    expect(() => parseSignal('TERM')).toThrow(UsageError);
  });

  it('no trigger: a usage error; each flag its trigger', () => {
    const base = { 'probe-timeout': '5s', failures: 3, for: '2s', count: 1, cooldown: '0s' };
    expect(() => planWatch(base, new Date())).toThrow(/no trigger given/);
    const plan = planWatch({ ...base, cpu: '80', rss: '200M', 'on-signal': 'USR1' }, new Date());
    expect(plan.triggers.map((t) => t.condition)).toEqual(['cpu above 80% for 2s', 'rss at or above 200.0 MiB for 2s', 'SIGUSR1 received']);
  });
});

/** A trigger whose samples the test decides: fires on every sample while `on` says so. */
function fakeTrigger(on: () => boolean): Trigger {
  return {
    kind: 'fake',
    condition: 'fake',
    needsTree: false,
    read: (ctx) => ({ at: ctx.now, value: on() ? 1 : 0 }),
    crosses: (s) => s.value === 1,
    fired: (run) => run.length > 0,
    show: (s) => `fake ${s.value}`,
  };
}

describe('the loop', () => {
  const self = captureIdentity(process.pid);

  it('-n 3: three captures, each recorded with its number and the samples that fired it; then it ends', async () => {
    const events: WatchEvent[] = [];
    const records: number[] = [];
    const outcome = await watch({
      target: self, label: 'self', triggers: [fakeTrigger(() => true)], count: 3, cooldownMs: 0, pollMs: 10, stop: new AbortController().signal,
      capture: async ({ record }) => {
        records.push(record.capture);
        expect(record.samples.length).toBeGreaterThan(0);
        return { bundle: `/b${record.capture}` };
      },
      onEvent: (e) => events.push(e),
    });
    expect(outcome).toEqual({ reason: 'count', captures: 3, bundles: ['/b1', '/b2', '/b3'] });
    expect(records).toEqual([1, 2, 3]);
    expect(events.map((e) => e.event)).toEqual(['watching', 'fired', 'captured', 'fired', 'captured', 'fired', 'captured', 'stopped']);
  });

  it('a tree locked by another snap: the firing is skipped, logged, and the watch goes on', async () => {
    const events: WatchEvent[] = [];
    let calls = 0;
    const outcome = await watch({
      target: self, label: 'self', triggers: [fakeTrigger(() => true)], count: 1, cooldownMs: 0, pollMs: 10, stop: new AbortController().signal,
      capture: async () => {
        if (++calls === 1) throw new LockedError('another snap (pid 1) is working on process 2', 'wait');
        return { bundle: '/b' };
      },
      onEvent: (e) => events.push(e),
    });
    expect(outcome.captures).toBe(1);
    expect(events.map((e) => e.event)).toEqual(['watching', 'fired', 'skipped', 'fired', 'captured', 'stopped']);
  });

  it('stop asked for: the watch ends without a capture; --until passed: it ends', async () => {
    const stop = new AbortController();
    setTimeout(() => stop.abort('SIGTERM'), 50);
    const stopped = await watch({ target: self, label: 'self', triggers: [fakeTrigger(() => false)], count: 1, cooldownMs: 0, pollMs: 10, stop: stop.signal, capture: async () => ({ bundle: '/b' }), onEvent: () => undefined });
    expect(stopped).toEqual({ reason: 'signal', captures: 0, bundles: [] });
    const until = await watch({ target: self, label: 'self', triggers: [fakeTrigger(() => false)], count: 1, cooldownMs: 0, pollMs: 10, untilMs: Date.now() + 50, stop: new AbortController().signal, capture: async () => ({ bundle: '/b' }), onEvent: () => undefined });
    expect(until.reason).toBe('until');
  });

  it('the cooldown keeps a trigger that still holds from firing until it is over', async () => {
    const at: number[] = [];
    await watch({
      target: self, label: 'self', triggers: [fakeTrigger(() => true)], count: 2, cooldownMs: 300, pollMs: 10, stop: new AbortController().signal,
      capture: async () => {
        at.push(Date.now());
        return { bundle: '/b' };
      },
      onEvent: () => undefined,
    });
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(300);
  });

  it('--follow: a target that exits is looked for once a poll without a capture, and watched again once it is back', async () => {
    const first = spawn('sleep', ['60'], { stdio: 'ignore' });
    const second = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const before = captureIdentity(first.pid!);
      const after = captureIdentity(second.pid!);
      const events: WatchEvent[] = [];
      const captured: number[] = [];
      let looks = 0;
      let armed = false;
      const outcome = await watch({
        target: before, label: 'name sleep', triggers: [fakeTrigger(() => armed)], count: 1, cooldownMs: 0, pollMs: 10, stop: new AbortController().signal,
        resolveAgain: async () => {
          // Three polls with nothing of that name, then the restarted one.
          if (++looks < 4) return undefined;
          armed = true;
          return after;
        },
        capture: async ({ target }) => {
          captured.push(target.pid);
          return { bundle: '/b' };
        },
        onEvent: (e) => {
          events.push(e);
          if (e.event === 'watching') first.kill('SIGKILL');
        },
      });
      expect(outcome).toMatchObject({ reason: 'count', captures: 1 });
      expect(looks).toBe(4);
      expect(captured).toEqual([after.pid]);
      expect(events.map((e) => e.event)).toEqual(['watching', 'target-gone', 'target-back', 'fired', 'captured', 'stopped']);
      expect(events[1]).toMatchObject({ pid: before.pid });
      expect(events[2]).toMatchObject({ pid: after.pid, previous: before.pid });
    } finally {
      first.kill('SIGKILL');
      second.kill('SIGKILL');
    }
  });

  it('without --follow, a target that exits ends the watch', async () => {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    const id = captureIdentity(child.pid!);
    const outcome = await watch({
      target: id, label: 'pid', triggers: [fakeTrigger(() => false)], count: 1, cooldownMs: 0, pollMs: 10, stop: new AbortController().signal,
      capture: async () => ({ bundle: '/b' }),
      onEvent: (e) => {
        if (e.event === 'watching') child.kill('SIGKILL');
      },
    });
    expect(outcome.reason).toBe('target-gone');
  });
});

const hasSystemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

describe('deploy/procsnap-watch@.service', () => {
  const unit = readFileSync(new URL('../../deploy/procsnap-watch@.service', import.meta.url), 'utf8');

  it('runs the installed procsnap with the instance\'s arguments, and stops it alone, letting a capture finish', () => {
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/procsnap watch \$PROCSNAP_WATCH_ARGS$/m);
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/procsnap\/watch\/%i\.conf$/m);
    expect(unit).toMatch(/^KillMode=mixed$/m);
  });

  // Not skipped quietly: the reason is in the test's name.
  it.skipIf(!hasSystemdAnalyze)(`systemd-analyze verify accepts an instance of it${hasSystemdAnalyze ? '' : ' (skipped: systemd-analyze is not installed)'}`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'snap-unit-'));
    try {
      // verify checks that ExecStart's program exists: the checkout's own launcher stands in for /usr/bin/procsnap.
      const launcher = new URL('../../bin/snap', import.meta.url).pathname;
      const file = join(dir, 'procsnap-watch@api.service');
      writeFileSync(file, unit.replace('/usr/bin/procsnap', launcher));
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      // An unknown or misspelt key is only a warning (exit 0): none may name the unit.
      expect(r.stderr.split('\n').filter((l) => l.includes('procsnap-watch@'))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('one poll of /proc', () => {
  it('the tree finds a child of the main thread and a child forked by a second thread; descriptors counted as the fd directory lists them', async () => {
    const ready = join(mkdtempSync(join(tmpdir(), 'snap-readings-')), 'ready');
    const code = [
      'import os, sys, threading, time',
      'def fork_one():',
      '    if os.fork() == 0:',
      '        while True: time.sleep(1)',
      'fork_one()',
      't = threading.Thread(target=lambda: (fork_one(), time.sleep(1e6)), daemon=True)',
      't.start()',
      'time.sleep(0.5)',
      'open(sys.argv[1], "w").write("ready")',
      'while True: time.sleep(1)',
    ].join('\n');
    const root = spawn('/usr/bin/python3', ['-c', code, ready], { stdio: 'ignore', detached: true });
    try {
      for (let i = 0; i < 200 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
      const readings = new PollReadings();
      const tree = readings.tree(root.pid!);
      expect(tree[0]).toBe(root.pid);
      expect(tree).toHaveLength(3);
      expect(readings.threadCount(root.pid!)).toBe(2);
      for (const pid of tree) expect(readings.fdCount(pid)).toBe(readdirSync(`/proc/${pid}/fd`).length);
      // The numbers parsed from the bytes are the ones the text says (the tree sleeps: nothing moves).
      const statText = readFileSync(`/proc/${root.pid}/stat`, 'utf8');
      const fields = statText.slice(statText.lastIndexOf(')') + 2).split(' ');
      expect(readings.cpuTicks(root.pid!)).toBe(Number(fields[11]) + Number(fields[12]));
      expect(readings.rssBytes(root.pid!)).toBe(Number(readFileSync(`/proc/${root.pid}/statm`, 'utf8').split(' ')[1]) * Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' })));
    } finally {
      process.kill(-root.pid!, 'SIGKILL');
      rmSync(dirname(ready), { recursive: true, force: true });
    }
  });
});
