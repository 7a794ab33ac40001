// `snap watch` end to end against real processes: each trigger fires on what it watches and the capture is taken
// through the dump; the bundle says which trigger fired and what it saw; the target runs on. Each watch is bounded
// (a few seconds of watching) and asserts what was captured, never how fast: the stacks-only capture, each capture
// encrypted or uploaded as dump does it, and a named target followed through a restart.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmdirSync, mkdirSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../src/watch/loop.js';
import { listBundle, makeSafeDir, makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { runSnap, startSnap, type RunningSnap, type SnapResult } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { killStarted, startScript, startSleeper, stateOf } from '../helpers/named-processes.js';
import { BUCKET, s3Env, startS3Server, stopS3Server, type S3Server } from '../helpers/s3-server.js';
import { freePort } from '../helpers/services/common.js';
import { waitFor } from '../helpers/target.js';
import { Journal } from '../../src/pipelines/journal.js';
import { captureIdentity } from '../../src/process/identity.js';

const fixtures = join(repoRoot, 'test', 'fixtures', 'watch');
let journalDir: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
});
afterAll(async () => {
  await killStarted();
  removeTempDirs();
});

const marker = (what: string) => `procsnap-watch-${what}-${process.pid}-${Date.now()}`;

interface Watching {
  run: RunningSnap;
  events: WatchEvent[];
  result: Promise<SnapResult>;
  waitFor(event: WatchEvent['event'], count?: number, timeoutMs?: number): Promise<WatchEvent>;
}

/** snap watch ARGS --json, its events collected as they come. */
function startWatch(args: string[], timeoutMs = 90_000, env: Record<string, string> = { PROCSNAP_JOURNAL_DIR: journalDir }): Watching {
  const run = startSnap(['watch', ...args, '--json'], { env, timeoutMs });
  const events: WatchEvent[] = [];
  let buffer = '';
  run.child.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim()) events.push(JSON.parse(line) as WatchEvent);
    }
  });
  return {
    run,
    events,
    result: run.result,
    waitFor: (event, count = 1, ms = 60_000) =>
      waitFor(() => events.filter((e) => e.event === event)[count - 1], { what: `watch event ${event} #${count}`, timeoutMs: ms, intervalMs: 50, detail: () => JSON.stringify(events) }),
  };
}

function expectWatchOk(r: SnapResult): void {
  expect(r.exitCode, `snap watch failed:\n${r.stderr}`).toBe(0);
}

function httpGet(port: number, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
  });
}

async function startService(m: string): Promise<{ pid: number; port: number }> {
  const port = await freePort();
  const pid = await startScript(join(fixtures, 'service.py'), m, [String(port)]);
  await waitFor(async () => (await httpGet(port, '/').catch(() => undefined))?.status === 200, { what: 'the service to answer', timeoutMs: 10_000, intervalMs: 50 });
  return { pid, port };
}

const captured = (w: Watching) => w.events.filter((e): e is Extract<WatchEvent, { event: 'captured' }> => e.event === 'captured');

describe('triggers', () => {
  it('--cpu 30 --for 2s: a /spin request burning a CPU is captured, its stacks show the spinning function, and the service still answers', async () => {
    const m = marker('spin');
    const svc = await startService(m);
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch(['--name', m, '--cpu', '30', '--for', '2s', '-n', '1', '--output-dir', out]);
    await w.waitFor('watching');
    // A spinning thread of the service and four processes it forks. The idle service uses next to nothing; spinning,
    // its tree got 45-77% of a CPU on a host whose other work kept both CPUs busy, so the threshold is one any spin
    // crosses there and no idle service does.
    await httpGet(svc.port, '/spin?s=20&p=4');
    const r = await w.result;
    expectWatchOk(r);
    const [c] = captured(w);
    expect(c?.trigger, `${JSON.stringify(w.events)}\n${r.stderr}`).toBe('cpu');
    expect(c!.bundle.startsWith(join(out, `snap-python3-${svc.pid}-cpu-1-`))).toBe(true);
    const manifest = await readBundleManifest(c!.bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.watch).toMatchObject({ trigger: 'cpu', condition: 'cpu above 30% for 2s', capture: 1 });
    // The run that fired spans --for: at least three readings a second apart, each at or above 30.
    expect(manifest.watch!.samples.length).toBeGreaterThanOrEqual(3);
    for (const s of manifest.watch!.samples) expect(s.value).toBeGreaterThanOrEqual(30);
    expect(manifest.targetNaming).toMatchObject({ by: 'name', pid: svc.pid });
    expect(manifest.mode).not.toBe('core-only');
    expect((await httpGet(svc.port, '/')).status).toBe(200);
    // The bundle's stacks show what burned the CPU, in python's own frames.
    const stacks = await runSnap(['stacks', c!.bundle], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(stacks.exitCode, stacks.stderr).toBe(0);
    expect(stacks.stdout).toContain('burn_the_cpu');
  });

  it('--rss 200M: a leak growing 20 MiB a second is captured before it reaches 300 MiB', async () => {
    const m = marker('leak');
    const pid = await startScript(join(fixtures, 'leak.py'), m, ['20', '400']);
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch([String(pid), '--rss', '200M', '-n', '1', '--output-dir', out]);
    expectWatchOk(await w.result);
    const [c] = captured(w);
    const manifest = await readBundleManifest(c!.bundle);
    const seen = manifest.watch!.samples.at(-1)!.value!;
    expect(seen).toBeGreaterThanOrEqual(200 * 1024 ** 2);
    expect(seen).toBeLessThan(300 * 1024 ** 2);
    // What the bundle holds was resident below 300 MiB too: the capture came before the leak got there.
    expect(manifest.target.vmRssKiB! * 1024).toBeLessThan(300 * 1024 ** 2);
    expect(stateOf(pid)).not.toBe('T');
  });

  it('--probe with --failures 3: a server whose health handler hangs is captured while it hangs', async () => {
    const m = marker('hang');
    const svc = await startService(m);
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch(['--name', m, '--probe', `http://127.0.0.1:${svc.port}/health`, '--probe-timeout', '500ms', '--failures', '3', '--then', 'core-only', '-n', '1', '--output-dir', out]);
    await w.waitFor('watching');
    await httpGet(svc.port, '/hang');
    expectWatchOk(await w.result);
    const [c] = captured(w);
    expect(c?.trigger).toBe('probe');
    const manifest = await readBundleManifest(c!.bundle);
    expect(manifest.mode).toBe('core-only');
    expect(manifest.watch!.samples).toHaveLength(3);
    for (const s of manifest.watch!.samples) expect(s).toMatchObject({ value: null, detail: 'no answer within 500 ms' });
    // Still hung after the capture (nothing was changed), and still serving everything else.
    expect((await httpGet(svc.port, '/')).status).toBe(200);
    await expect(httpGet(svc.port, '/health', 500)).rejects.toThrow(/timed out/);
  });

  it('--cgroup-memory 80: a process growing in a v1 memory cgroup with a limit is captured before the OOM killer', async () => {
    const m = marker('oom');
    const dir = `/sys/fs/cgroup/memory/procsnap-test-${process.pid}-oom`;
    mkdirSync(dir);
    let pid: number | undefined;
    try {
      // It grows to 170 MiB of a 200 MiB limit and holds there: past 80%, short of the OOM killer.
      writeFileSync(join(dir, 'memory.limit_in_bytes'), String(200 * 1024 ** 2));
      pid = await startScript(join(fixtures, 'leak.py'), m, ['20', '170']);
      writeFileSync(join(dir, 'cgroup.procs'), String(pid));
      const out = makeTempDir('snap-test-watch-');
      const w = startWatch(['--name', m, '--cgroup-memory', '80', '-n', '1', '--output-dir', out]);
      expectWatchOk(await w.result);
      const [c] = captured(w);
      expect(c?.trigger).toBe('cgroup-memory');
      const manifest = await readBundleManifest(c!.bundle);
      const last = manifest.watch!.samples.at(-1)!;
      expect(last.value).toBeGreaterThanOrEqual(80);
      expect(last.detail).toContain(dir);
      expect(stateOf(pid), 'the capture is taken from the live process, which runs on').toMatch(/^[RS]$/);
      expect(manifest.target.pid).toBe(pid);
    } finally {
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
        await waitFor(() => readdirSync('/proc').indexOf(String(pid)) < 0 || stateOf(pid!) === 'Z', { what: 'the leak to die', timeoutMs: 10_000 });
      }
      await waitFor(() => {
        try {
          rmdirSync(dir);
          return true;
        } catch {
          return false;
        }
      }, { what: `${dir} to be removed`, timeoutMs: 10_000, intervalMs: 100 });
    }
  });
});

describe('counts, cooldown, signals', () => {
  it('-n 3 --cooldown 2s: three bundles, each named after the trigger and its number', async () => {
    const t = await startSleeper(marker('three'));
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch([String(t.pid), '--threads', '1', '-n', '3', '--cooldown', '2s', '--then', 'core-only', '--output-dir', out]);
    expectWatchOk(await w.result);
    expect(captured(w).map((c) => c.capture)).toEqual([1, 2, 3]);
    const names = readdirSync(out).sort();
    expect(names).toHaveLength(3);
    for (const n of [1, 2, 3]) expect(names.some((x) => x.startsWith(`snap-python3-${t.pid}-threads-${n}-`))).toBe(true);
    expect(w.events.at(-1)).toMatchObject({ event: 'stopped', reason: 'count', captures: 3 });
    expect(stateOf(t.pid)).toBe('S');
  });

  it('--on-signal USR1: one capture per signal', async () => {
    const t = await startSleeper(marker('usr1'));
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch([String(t.pid), '--on-signal', 'USR1', '-n', '2', '--then', 'core-only', '--output-dir', out]);
    await w.waitFor('watching');
    w.run.child.kill('SIGUSR1');
    await w.waitFor('captured', 1);
    expect(captured(w)).toHaveLength(1);
    w.run.child.kill('SIGUSR1');
    expectWatchOk(await w.result);
    expect(captured(w).map((c) => c.trigger)).toEqual(['signal', 'signal']);
    expect(readdirSync(out)).toHaveLength(2);
    expect(stateOf(t.pid)).toBe('S');
  });

  it('a firing while another snap holds the tree (exit 14 from the dump) is logged as skipped; the next one captures', async () => {
    const t = await startSleeper(marker('locked'));
    const out = makeTempDir('snap-test-watch-');
    // This test process takes the dump's own journal and lock on the target, as a dump under way would.
    process.env.PROCSNAP_JOURNAL_DIR = journalDir;
    const id = captureIdentity(t.pid);
    const held = Journal.open({ operation: 'dump', target: id, originalState: 'running', restoreTo: 'running', step: 'preflight', touched: false, output: null, partialPath: null, workDir: null });
    let released = false;
    try {
      held.lockProcesses([id]);
      const w = startWatch([String(t.pid), '--threads', '1', '-n', '1', '--cooldown', '1s', '--then', 'core-only', '--output-dir', out]);
      const skipped = await w.waitFor('skipped');
      expect(skipped).toMatchObject({ trigger: 'threads', reason: 'locked' });
      expect(readdirSync(out)).toEqual([]);
      held.remove();
      released = true;
      expectWatchOk(await w.result);
      expect(captured(w)).toHaveLength(1);
      expect(readdirSync(out)).toHaveLength(1);
      expect(stateOf(t.pid)).toBe('S');
    } finally {
      if (!released) held.remove();
    }
  });

  it('SIGTERM during a capture: the capture is completed or rolled back, the watch ends, the target runs', async () => {
    const t = await startSleeper(marker('term'));
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch([String(t.pid), '--threads', '1', '-n', '1', '--output-dir', out]);
    await w.waitFor('fired');
    w.run.child.kill('SIGTERM');
    const r = await w.result;
    expectWatchOk(r);
    const last = w.events.at(-1);
    expect(last?.event).toBe('stopped');
    const names = readdirSync(out);
    if (captured(w).length === 1) {
      expect(names).toEqual([captured(w)[0]!.bundle.slice(out.length + 1)]);
      const manifest = await readBundleManifest(captured(w)[0]!.bundle);
      expect(manifest.watch?.trigger).toBe('threads');
    } else expect(names, 'a rolled-back capture leaves nothing').toEqual([]);
    await waitFor(() => stateOf(t.pid) === 'S', { what: 'the target to run', timeoutMs: 5000 });
  });
});

describe('--then stacks', () => {
  it('the bundle holds the stacks and the manifest: no checkpoint, no core; the target runs on', async () => {
    const t = await startSleeper(marker('stacks'), 1);
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch([String(t.pid), '--threads', '1', '-n', '1', '--then', 'stacks', '--output-dir', out]);
    expectWatchOk(await w.result);
    const [c] = captured(w);
    expect(c?.bundle.startsWith(join(out, `snap-python3-${t.pid}-threads-1-`)), JSON.stringify(w.events)).toBe(true);
    const entries = await listBundle(c!.bundle);
    expect(entries).toContain('manifest.json');
    expect(entries).toContain('stacks.txt');
    expect(entries).toContain('stacks.json');
    expect(entries.filter((e) => e.startsWith('criu/')), 'no checkpoint').toEqual([]);
    expect(entries.filter((e) => /^core[.-]/.test(e)), 'no core').toEqual([]);
    const manifest = await readBundleManifest(c!.bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.watch).toMatchObject({ trigger: 'threads', capture: 1 });
    expect(manifest.processes!.map((p) => p.pid).sort()).toEqual([t.pid, ...t.workers].sort());
    for (const p of manifest.processes!) expect(p.core).toBeNull();
    // The stacks are of both processes, read from the cores before they were left out.
    const stacks = await runSnap(['stacks', c!.bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(stacks.exitCode, stacks.stderr).toBe(0);
    for (const pid of [t.pid, ...t.workers]) expect(stacks.stdout).toContain(`"pid": ${pid}`);
    expect(stateOf(t.pid)).toBe('S');
    for (const k of t.workers) expect(stateOf(k)).toBe('S');
  });
});

const hasAge = spawnSync('age-keygen', ['--version']).status === 0;

describe('shipping each capture, as dump does', () => {
  it.skipIf(!hasAge)('--encrypt-to: the capture is an age file, read back with --identity', async () => {
    const keys = makeSafeDir('snap-test-watch-keys-');
    const identity = join(keys, 'analyst.txt');
    execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
    const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim();
    const t = await startSleeper(marker('encrypt'));
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch([String(t.pid), '--threads', '1', '-n', '1', '--then', 'core-only', '--encrypt-to', recipient, '--output-dir', out]);
    expectWatchOk(await w.result);
    const [c] = captured(w);
    expect(c!.bundle, 'named for what it is').toMatch(/-threads-1-\d{8}T\d{6}Z\.tar\.zst\.age$/);
    const plain = await runSnap(['inspect', c!.bundle], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(plain.exitCode, 'refused without the identity').toBe(11);
    expect(plain.stderr).toContain(recipient);
    const read = await runSnap(['inspect', c!.bundle, '--identity', identity, '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(read.exitCode, read.stderr).toBe(0);
    expect(JSON.stringify(JSON.parse(read.stdout))).toContain('"trigger":"threads"');
    expect(stateOf(t.pid)).toBe('S');
  });

  describe('--upload', () => {
    let server: S3Server;
    beforeAll(async () => {
      server = await startS3Server();
    });
    afterAll(async () => {
      if (server) await stopS3Server(server);
    });

    it('the capture goes to the bucket with its sha256 and is fetched back; no local bundle is left', async () => {
      const t = await startSleeper(marker('upload'));
      const out = makeTempDir('snap-test-watch-');
      const env = s3Env(server, journalDir);
      const w = startWatch([String(t.pid), '--threads', '1', '-n', '1', '--then', 'core-only', '--upload', `s3://${BUCKET}/watch/`, '--output-dir', out], 90_000, env);
      expectWatchOk(await w.result);
      const [c] = captured(w);
      const name = c!.bundle.slice(out.length + 1);
      expect(c!.upload).toBe(`s3://${BUCKET}/watch/${name}`);
      expect(existsSync(c!.bundle), 'removed once the upload is checked').toBe(false);
      const fetched = join(out, 'fetched.tar.zst');
      const fetch = await runSnap(['fetch', c!.upload!, '-o', fetched], { env });
      expect(fetch.exitCode, fetch.stderr).toBe(0);
      const manifest = await readBundleManifest(fetched);
      expect(manifest.watch).toMatchObject({ trigger: 'threads', capture: 1 });
      expect(manifest.target.pid).toBe(t.pid);
      expect(stateOf(t.pid)).toBe('S');
    });
  });
});

describe('--follow', () => {
  it('a named target that exits is looked for again, without a capture, and watched once it is back under the same name', async () => {
    const m = marker('follow');
    const first = await startSleeper(m);
    const out = makeTempDir('snap-test-watch-');
    const w = startWatch(['--name', m, '--follow', '--on-signal', 'USR1', '-n', '1', '--then', 'core-only', '--output-dir', out]);
    await w.waitFor('watching');
    process.kill(first.pid, 'SIGKILL');
    expect(await w.waitFor('target-gone')).toMatchObject({ pid: first.pid });
    // Gone for a few polls: nothing is captured meanwhile.
    await new Promise((r) => setTimeout(r, 2500));
    const second = await startSleeper(m);
    expect(await w.waitFor('target-back')).toMatchObject({ pid: second.pid, previous: first.pid });
    w.run.child.kill('SIGUSR1');
    expectWatchOk(await w.result);
    expect(w.events.map((e) => e.event)).toEqual(['watching', 'target-gone', 'target-back', 'fired', 'captured', 'stopped']);
    const manifest = await readBundleManifest(captured(w)[0]!.bundle);
    expect(manifest.target.pid).toBe(second.pid);
    expect(manifest.targetNaming).toMatchObject({ by: 'name', pid: second.pid });
    expect(stateOf(second.pid)).toBe('S');
  });

  it('--follow with a pid is refused: a pid is not given again to a restarted process', async () => {
    const r = await runSnap(['watch', String(process.pid), '--threads', '1', '--follow'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('--follow is for a named target');
  });
});
