// One dump per target at a time: the journal is also a per-target lock, taken before anything is read or sent. A
// second `snap dump` of the same pid refuses at once (exit 14), names the first one's pid, and does not touch the
// target; dumps of different targets do not wait for each other. Every process of a tree is locked too: a dump of a
// parent and one of its child never both stop the child.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { startSnap, type RunningSnap, type SnapResult } from '../helpers/cli.js';
import {
  expectNoLeftovers, expectNoOutput, expectRunning, fake, REAL_CRIU, REAL_GDB, startDump, startTargetWithPid, waitUntilTracedBy, type DumpUnderTest,
} from '../helpers/faults.js';
import { cleanupAllTargets, killPid, readProcStat, readThreadStates, startTarget, waitFor } from '../helpers/target.js';

afterAll(removeTempDirs);
afterEach(cleanupAllTargets);

/** The refusal: exit 14, one line naming the snap that holds the target, and the refused run never stopped it. */
async function expectRefused(loser: DumpUnderTest, winner: DumpUnderTest): Promise<void> {
  const result = await loser.result;
  expect(result.exitCode, result.stderr).toBe(14);
  const errors = result.stderr.split('\n').filter((l) => l.startsWith('snap: error: '));
  expect(errors).toHaveLength(1);
  expect(errors[0]).toMatch(
    new RegExp(`^snap: error: another snap \\(pid ${winner.pid}\\) is already working on target ${loser.target.pid} \\(step: [\\w-]+\\); wait for it to finish$`),
  );
  expect(result.stderr).not.toMatch(/\[start\] Stop the target/);
  expect(result.stderr).not.toMatch(/rolled back: target/);
  expect(loser.markerLines(), 'the refused run started no tool step').toEqual([]);
  await expectNoLeftovers(loser);
  expectNoOutput(loser);
}

describe('two dumps of one target', () => {
  it('started together: exactly one succeeds, the other refuses naming it; target running at the end', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const journalDir = makeTempDir('snap-fault-journal-');
    // A criu that waits 2 s before the real one runs: the winner holds the lock for at least that long.
    const options = { criu: fake('criu-slow'), gdb: REAL_GDB, journalDir, env: { PROCSNAP_FAKE_DELAY: '2' } };
    const runs = [startDump(target, options), startDump(target, options), startDump(target, options)];
    const results = await Promise.all(runs.map((r) => r.result));
    const winners = runs.filter((_, i) => results[i]!.exitCode === 0);
    expect(results.map((r) => r.exitCode).sort(), results.map((r) => r.stderr).join('\n----\n')).toEqual([0, 14, 14]);
    const winner = winners[0]!;
    expect(existsSync(winner.output)).toBe(true);
    for (const loser of runs.filter((r) => r !== winner)) await expectRefused(loser, winner);
    await expectRunning(target);
  });

  it('a second dump while the first has the target frozen (default journal directory): refused at once, the first finishes', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const first = startDump(target, { criu: fake('criu-slow'), gdb: REAL_GDB, journalDir: null, env: { PROCSNAP_FAKE_DELAY: '3' } });
    await first.waitForMarker('the first dump to reach criu');
    expect(target.threadStates().every((s) => s === 'T'), 'frozen by the first dump').toBe(true);
    const second = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB, journalDir: null });
    await expectRefused(second, first);
    // Refused while the first still holds the target: it did not wait for the first to finish.
    expect(first.snap.child.exitCode, 'the first dump is still running').toBeNull();
    expect(target.threadStates().every((s) => s === 'T'), 'still frozen: the second did not resume it').toBe(true);
    const result = await first.result;
    expect(result.exitCode, result.stderr).toBe(0);
    expect(existsSync(first.output)).toBe(true);
    await expectRunning(target);
  });

  it('a second dump while the first one\'s gdb is attached: refused as locked (not as "already traced"), names the first', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const journalDir = makeTempDir('snap-fault-journal-');
    // gdb-hold: the real gdb attaches, then waits 3 s before its gcore, so the target stays traced meanwhile.
    const first = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-hold'), journalDir, env: { PROCSNAP_FAKE_DELAY: '3' } });
    await waitUntilTracedBy(target, /gdb$/, first);
    const second = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB, journalDir });
    await expectRefused(second, first);
    const result = await first.result;
    expect(result.exitCode, result.stderr).toBe(0);
    await expectRunning(target);
  });

  it('a second dump while the first is in preflight: refused, names the first', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const journalDir = makeTempDir('snap-fault-journal-');
    const first = startDump(target, { criu: fake('criu-check-hang'), gdb: REAL_GDB, journalDir, args: ['--timeout', '8'] });
    await first.waitForMarker('the first dump to run `criu check`', (m) => m.mode === 'check-hang');
    const second = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB, journalDir });
    await expectRefused(second, first);
    first.signal('SIGINT');
    expect((await first.result).exitCode).toBe(130);
    await expectRunning(target);
  });
});

describe('dumps of two different targets', () => {
  it('run side by side and both succeed', async () => {
    const [a, b] = await Promise.all([startTarget({ threads: 4, group: 'setsid' }), startTarget({ threads: 4, group: 'setsid' })]);
    const journalDir = makeTempDir('snap-fault-journal-');
    const options = { criu: fake('criu-slow'), gdb: REAL_GDB, journalDir, env: { PROCSNAP_FAKE_DELAY: '1' } };
    const runs = [startDump(a, options), startDump(b, options)];
    const results = await Promise.all(runs.map((r) => r.result));
    expect(results.map((r) => r.exitCode), results.map((r) => r.stderr).join('\n----\n')).toEqual([0, 0]);
    for (const r of runs) expect(existsSync(r.output)).toBe(true);
    await expectRunning(a);
    await expectRunning(b);
  });
});

describe('dumps of a parent and of one of its children', () => {
  const roots: ChildProcess[] = [];
  afterEach(async () => {
    for (const root of roots.splice(0)) {
      for (const pid of childrenOf(root.pid!)) await killPid(pid);
      await killPid(root.pid!);
    }
  });

  function childrenOf(pid: number): number[] {
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** A session leader (bash) with two running children (sleeps), as a service manager starts one. */
  async function startTree(): Promise<{ parent: number; child: number; all: number[] }> {
    const root = spawn('/bin/bash', ['-c', 'sleep 310 & sleep 311; wait'], { detached: true, stdio: 'ignore' });
    roots.push(root);
    const kids = await waitFor(() => {
      const k = childrenOf(root.pid!);
      return k.length === 2 && k.every((p) => readProcStat(p)?.comm === 'sleep') ? k : undefined;
    }, { what: 'bash and its two sleeps' });
    return { parent: root.pid!, child: kids[0]!, all: [root.pid!, ...kids] };
  }

  function processExistsNamed(pid: number, comm: string): boolean {
    return readProcStat(pid)?.comm === comm;
  }

  function dump(pid: number, journalDir: string, extra: string[] = [], env: Record<string, string> = {}): RunningSnap {
    const out = join(makeTempDir('snap-tree-lock-out-'), 'x.tar.zst');
    return startSnap(['dump', String(pid), '-o', out, ...extra], { env: { PROCSNAP_JOURNAL_DIR: journalDir, ...env } });
  }

  /** No thread of any process of the tree is stopped. */
  function expectNoneStopped(pids: number[], context: string): void {
    for (const pid of pids) {
      const states = readThreadStates(pid);
      expect(states.length, `process ${pid} is gone; ${context}`).toBeGreaterThan(0);
      expect(states.filter((s) => s === 'T' || s === 't'), `process ${pid} has stopped threads (${states.join(',')}); ${context}`).toEqual([]);
    }
  }

  /** The refusal names the snap that holds the shared process, and nothing else went wrong. */
  function expectLockedBy(result: SnapResult, holder: number, line: RegExp): void {
    expect(result.exitCode, result.stderr).toBe(14);
    const errors = result.stderr.split('\n').filter((l) => l.startsWith('snap: error: '));
    expect(errors, result.stderr).toHaveLength(1);
    expect(errors[0]).toContain(`another snap (pid ${holder}) is already working on `);
    expect(errors[0]).toMatch(line);
    expect(result.stderr).not.toMatch(/rolled back: target/);
  }

  it('started at the same moment, 20 times: one succeeds, the other succeeds too or refuses naming it (exit 14); no process of the tree is left stopped', async () => {
    const tree = await startTree();
    const journalDir = makeTempDir('snap-tree-lock-journal-');
    const tally = { parentWon: 0, childWon: 0, both: 0 };
    for (let run = 1; run <= 20; run++) {
      const parent = dump(tree.parent, journalDir);
      const child = dump(tree.child, journalDir);
      const [p, c] = await Promise.all([parent.result, child.result]);
      const context = `run ${run}: parent dump exit ${p.exitCode}, child dump exit ${c.exitCode}\n${p.stderr}\n----\n${c.stderr}`;
      expectNoneStopped(tree.all, context);
      expect([p.exitCode, c.exitCode], context).toContain(0);
      if (p.exitCode !== 0)
        expectLockedBy(p, child.child.pid!, new RegExp(`working on process ${tree.child} of this tree \\(its target; step: [\\w-]+\\); wait for it to finish$`));
      if (c.exitCode !== 0)
        expectLockedBy(c, parent.child.pid!, new RegExp(`working on target ${tree.child} \\(in the tree of its target ${tree.parent}; step: [\\w-]+\\); wait for it to finish$`));
      expect(readdirSync(journalDir), `no journal or lock left; ${context}`).toEqual([]);
      if (p.exitCode === 0 && c.exitCode === 0) tally.both++;
      else if (p.exitCode === 0) tally.parentWon++;
      else tally.childWon++;
    }
    console.log(`[measured] parent and child dumps started together, 20 runs: ${JSON.stringify(tally)}`);
  });

  it('a restore of a tree one of whose pids a running dump holds: refused at once naming that dump (exit 14), nothing restored', async () => {
    const tree = await startTree();
    const journalDir = makeTempDir('snap-tree-lock-journal-');
    const bundle = join(makeTempDir('snap-tree-lock-bundle-'), 'tree.tar.zst');
    const dumped = await startSnap(['dump', String(tree.parent), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: journalDir } }).result;
    expect(dumped.exitCode, dumped.stderr).toBe(0);
    for (const pid of [...tree.all].reverse()) await killPid(pid);
    roots.splice(0);
    // Another process now has the child's pid, and a dump of it holds its lock (its criu waits 3 s).
    const other = await startTargetWithPid(tree.child);
    try {
      const holder = startDump(other, { criu: fake('criu-slow'), journalDir, env: { PROCSNAP_FAKE_DELAY: '3' } });
      await holder.waitForMarker('the dump of the new process to reach criu');
      const restore = await startSnap(['restore', bundle, '--allow-unsigned'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } }).result;
      expect(restore.exitCode, restore.stderr).toBe(14);
      expect(restore.stderr).toMatch(new RegExp(`snap: error: another snap \\(pid ${holder.pid}\\) is already working on process ${tree.child} of this tree \\(its target; step: [\\w-]+\\); wait for it to finish`));
      expect(processExistsNamed(tree.parent, 'bash'), 'the tree was not restored').toBe(false);
      const held = await holder.result;
      expect(held.exitCode, held.stderr).toBe(0);
      await expectRunning(other);
      expect(readdirSync(journalDir)).toEqual([]);
    } finally {
      await other.cleanup();
    }
  });

  it('a dump of the child while the parent\'s dump holds the tree: refused at once naming it, the parent\'s dump finishes', async () => {
    const tree = await startTree();
    const journalDir = makeTempDir('snap-tree-lock-journal-');
    const parent = dump(tree.parent, journalDir, ['--criu', fake('criu-slow')], { PROCSNAP_FAKE_DELAY: '3' });
    await waitFor(() => readdirSync(journalDir).some((n) => n.startsWith(`pid-${tree.child}-`)) || parent.child.exitCode !== null, { what: 'the parent dump to lock the child', timeoutMs: 30_000 });
    const child = await dump(tree.child, journalDir).result;
    expect(parent.child.exitCode, 'the parent dump is still running').toBeNull();
    expectLockedBy(child, parent.child.pid!, new RegExp(`working on target ${tree.child} \\(in the tree of its target ${tree.parent}; step: [\\w-]+\\)`));
    const p = await parent.result;
    expect(p.exitCode, p.stderr).toBe(0);
    expectNoneStopped(tree.all, p.stderr);
    expect(readdirSync(journalDir)).toEqual([]);
  });

  it('a dump of the parent while the child\'s dump holds the child: refused before any signal, naming it; the child\'s dump finishes', async () => {
    const tree = await startTree();
    const journalDir = makeTempDir('snap-tree-lock-journal-');
    const child = dump(tree.child, journalDir, ['--criu', fake('criu-slow')], { PROCSNAP_FAKE_DELAY: '3' });
    await waitFor(() => readThreadStates(tree.child).every((s) => s === 'T') || child.child.exitCode !== null, { what: 'the child dump to stop the child', timeoutMs: 30_000 });
    const parent = await dump(tree.parent, journalDir).result;
    expect(child.child.exitCode, 'the child dump is still running').toBeNull();
    expectLockedBy(parent, child.child.pid!, new RegExp(`working on process ${tree.child} of this tree \\(its target; step: [\\w-]+\\)`));
    expect(parent.stderr, 'the refused dump sent no signal').not.toMatch(/\[start\] Stop every process/);
    expectNoneStopped([tree.parent, ...tree.all.slice(2)], parent.stderr);
    const c = await child.result;
    expect(c.exitCode, c.stderr).toBe(0);
    expectNoneStopped(tree.all, c.stderr);
    expect(readdirSync(journalDir)).toEqual([]);
  });
});
