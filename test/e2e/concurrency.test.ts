// One dump per target at a time: the journal is also a per-target lock, taken before anything is read or sent. A
// second `snap dump` of the same pid refuses at once (exit 14), names the first one's pid, and does not touch the
// target; dumps of different targets do not wait for each other.
import { existsSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import {
  expectNoLeftovers, expectNoOutput, expectRunning, fake, REAL_CRIU, REAL_GDB, startDump, waitUntilTracedBy, type DumpUnderTest,
} from '../helpers/faults.js';
import { cleanupAllTargets, startTarget } from '../helpers/target.js';

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
    const options = { criu: fake('criu-slow'), gdb: REAL_GDB, journalDir, env: { SNAP_FAKE_DELAY: '2' } };
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
    const first = startDump(target, { criu: fake('criu-slow'), gdb: REAL_GDB, journalDir: null, env: { SNAP_FAKE_DELAY: '3' } });
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
    const first = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-hold'), journalDir, env: { SNAP_FAKE_DELAY: '3' } });
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
    const options = { criu: fake('criu-slow'), gdb: REAL_GDB, journalDir, env: { SNAP_FAKE_DELAY: '1' } };
    const runs = [startDump(a, options), startDump(b, options)];
    const results = await Promise.all(runs.map((r) => r.result));
    expect(results.map((r) => r.exitCode), results.map((r) => r.stderr).join('\n----\n')).toEqual([0, 0]);
    for (const r of runs) expect(existsSync(r.output)).toBe(true);
    await expectRunning(a);
    await expectRunning(b);
  });
});
