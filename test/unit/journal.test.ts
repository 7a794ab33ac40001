// The journal and the process locks on disk: files appear whole (a reader never sees one empty or half written), a
// process another snap holds is refused naming that snap and its target, a lock on a process that is gone is in no
// one's way, a lock left by a dead snap sends the person to `snap recover`, and recover clears what it can read and
// leaves what it cannot.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockedError } from '../../src/errors.js';
import { captureIdentity, checkIdentity, signalRecorded, type TargetIdentity } from '../../src/process/identity.js';
import { Journal, type JournalEntry } from '../../src/pipelines/journal.js';
import { pidClaimName, processLockName, type LockEntry } from '../../src/pipelines/locks.js';
import { recoverAll } from '../../src/pipelines/recover/index.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { waitFor } from '../helpers/target.js';

const DEAD_SNAP = 4_194_303; // above pid_max: no process has it
const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

let dir: string;
const sleepers: ChildProcess[] = [];
const savedDir = process.env.PROCSNAP_JOURNAL_DIR;

beforeEach(() => {
  dir = makeTempDir('snap-journal-unit-');
  process.env.PROCSNAP_JOURNAL_DIR = dir;
});
afterEach(() => {
  for (const s of sleepers.splice(0)) s.kill('SIGKILL');
  if (savedDir === undefined) delete process.env.PROCSNAP_JOURNAL_DIR;
  else process.env.PROCSNAP_JOURNAL_DIR = savedDir;
});
afterAll(removeTempDirs);

/** A live process to lock, or to stand for another snap. */
async function sleeper(): Promise<TargetIdentity> {
  const child = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
  sleepers.push(child);
  const pid = child.pid!;
  return waitFor(() => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep' ? captureIdentity(pid) : undefined;
    } catch {
      return undefined;
    }
  }, { what: `sleep ${pid} to exec` });
}

function openJournal(target: TargetIdentity, operation: 'dump' | 'restore' = 'dump'): Journal {
  return Journal.open({
    operation, target, originalState: 'running', restoreTo: 'running', step: 'preflight', touched: false, output: null, partialPath: null, workDir: null,
  });
}

/** A lock as another snap writes it. */
function writeLock(name: string, l: Partial<LockEntry> & Pick<LockEntry, 'pid' | 'snapPid' | 'snapStartTime' | 'targetPid'>): void {
  const entry: LockEntry = { version: 1, startTime: null, bootId, operation: 'dump', createdAt: new Date().toISOString(), ...l };
  writeFileSync(join(dir, name), JSON.stringify(entry));
}

/** The other snap's journal, so that a refusal can name its step. */
function writeJournal(owner: TargetIdentity, targetPid: number, step: string): void {
  const now = new Date().toISOString();
  const entry: JournalEntry = {
    version: 1, operation: 'dump', snapPid: owner.pid, snapStartTime: owner.startTime, target: { pid: targetPid, startTime: 1, bootId },
    originalState: 'running', restoreTo: 'running', step, touched: true, output: null, partialPath: null, workDir: null, toolPids: [],
    startedAt: now, updatedAt: now,
  };
  writeFileSync(join(dir, `target-${targetPid}.json`), JSON.stringify(entry));
}

function refusal(fn: () => void): LockedError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(LockedError);
    return e as LockedError;
  }
  throw new Error('expected a LockedError, and nothing was thrown');
}

describe('files appear whole', () => {
  it('a reader looping beside 2000 creates of a journal and a lock never reads one empty or half written', async () => {
    const [root, member] = [await sleeper(), await sleeper()];
    const paths = [join(dir, `target-${root.pid}.json`), join(dir, processLockName(member.pid, member.startTime))];
    // seen (whole files read), partial (empty or not JSON), stop flag: shared with the reader thread.
    const counters = new Int32Array(new SharedArrayBuffer(12));
    const reader = new Worker(
      `const { workerData: { paths, counters } } = require('node:worker_threads');
       const { readFileSync } = require('node:fs');
       Atomics.store(counters, 2, 2);
       while (Atomics.load(counters, 2) !== 1) {
         for (const p of paths) {
           let text;
           try { text = readFileSync(p, 'utf8'); } catch { continue; }
           try { JSON.parse(text); Atomics.add(counters, 0, 1); } catch { Atomics.add(counters, 1, 1); }
         }
       }`,
      { eval: true, workerData: { paths, counters } },
    );
    await waitFor(() => Atomics.load(counters, 2) === 2, { what: 'the reader thread to start' });
    for (let i = 0; i < 2000; i++) {
      const j = openJournal(root);
      j.lockProcesses([member]);
      j.remove();
    }
    Atomics.store(counters, 2, 1);
    await new Promise((resolve) => reader.once('exit', resolve));
    expect(Atomics.load(counters, 1), 'reads of an empty or partial file').toBe(0);
    expect(Atomics.load(counters, 0), 'whole files read: the reader did overlap the creates').toBeGreaterThan(0);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('process locks', () => {
  it('a process another snap holds: refused naming that snap, its target and its step; the locks this call took are let go', async () => {
    const [root, member, other] = [await sleeper(), await sleeper(), await sleeper()];
    writeLock(processLockName(member.pid, member.startTime), { pid: member.pid, startTime: member.startTime, snapPid: other.pid, snapStartTime: other.startTime, targetPid: 4242 });
    writeJournal(other, 4242, 'stop');
    const j = openJournal(root);
    const e = refusal(() => j.lockProcesses([root, member]));
    expect(e.exitCode).toBe(14);
    expect(e.oneLine()).toBe(`another snap (pid ${other.pid}) is already working on process ${member.pid} of this tree (in the tree of its target 4242; step: stop); wait for it to finish`);
    expect(existsSync(join(dir, processLockName(root.pid, root.startTime))), 'the root lock taken before the refusal').toBe(false);
    j.remove();
    expect(readdirSync(dir).sort()).toEqual([processLockName(member.pid, member.startTime), 'target-4242.json'].sort());
  });

  it('the target itself held as a member of another snap\'s tree, and a root that another snap holds as its own target', async () => {
    const [root, other] = [await sleeper(), await sleeper()];
    writeLock(processLockName(root.pid, root.startTime), { pid: root.pid, startTime: root.startTime, snapPid: other.pid, snapStartTime: other.startTime, targetPid: 4243 });
    const j = openJournal(root);
    expect(refusal(() => j.lockProcesses([root])).oneLine()).toBe(`another snap (pid ${other.pid}) is already working on target ${root.pid} (in the tree of its target 4243); wait for it to finish`);
    j.remove();
  });

  it('a lock on a process that is gone (its pid now has another start time) is in no one\'s way, whoever holds it', async () => {
    const [member, other] = [await sleeper(), await sleeper()];
    const stale = processLockName(member.pid, member.startTime - 1);
    writeLock(stale, { pid: member.pid, startTime: member.startTime - 1, snapPid: other.pid, snapStartTime: other.startTime, targetPid: 4244 });
    const staleDead = processLockName(member.pid, member.startTime - 2);
    writeLock(staleDead, { pid: member.pid, startTime: member.startTime - 2, snapPid: DEAD_SNAP, snapStartTime: 1, targetPid: 4244 });
    const j = openJournal(member);
    j.lockProcesses([member]);
    const mine = JSON.parse(readFileSync(join(dir, processLockName(member.pid, member.startTime)), 'utf8')) as LockEntry;
    expect(mine).toMatchObject({ pid: member.pid, startTime: member.startTime, snapPid: process.pid, targetPid: member.pid, operation: 'dump' });
    j.lockProcesses([member]); // held already: nothing more to take
    j.remove();
    expect(readdirSync(dir).sort()).toEqual([stale, staleDead].sort());
  });

  it('a lock left by a snap that died: refused, and sent to `snap recover`', async () => {
    const [root, member] = [await sleeper(), await sleeper()];
    writeLock(processLockName(member.pid, member.startTime), { pid: member.pid, startTime: member.startTime, snapPid: DEAD_SNAP, snapStartTime: 1, targetPid: 4245 });
    const j = openJournal(root);
    const e = refusal(() => j.lockProcesses([member]));
    expect(e.oneLine()).toBe(`a previous snap (pid ${DEAD_SNAP}) died while working on process ${member.pid} of this tree (in the tree of its target 4245); run \`snap recover\` first`);
    j.remove();
  });

  it('a lock that cannot be read: refused, naming the file', async () => {
    const [root] = [await sleeper()];
    writeFileSync(join(dir, processLockName(root.pid, root.startTime)), '{"half');
    const j = openJournal(root);
    expect(refusal(() => j.lockProcesses([root])).oneLine()).toMatch(/^the lock \S+ on target \d+ cannot be read; if no snap is working on process \d+, remove it and try again$/);
    j.remove();
  });
});

describe('a restore\'s claims on the pids it will create', () => {
  it('a dump of a process whose pid a live restore has claimed is refused naming the restore', async () => {
    const [member, other] = [await sleeper(), await sleeper()];
    writeLock(pidClaimName(member.pid), { pid: member.pid, operation: 'restore', snapPid: other.pid, snapStartTime: other.startTime, targetPid: 4246 });
    const j = openJournal(member);
    expect(refusal(() => j.lockProcesses([member])).oneLine()).toBe(`another snap (pid ${other.pid}) is already restoring target ${member.pid} (in the tree of its target 4246); wait for it to finish`);
    j.remove();
    expect(readdirSync(dir)).toEqual([pidClaimName(member.pid)]);
  });

  it('a restore claiming a pid a live dump holds is refused; a pid claimed twice is refused; a dump lock on a process that is gone is no obstacle', async () => {
    const [live, other] = [await sleeper(), await sleeper()];
    writeLock(processLockName(live.pid, live.startTime), { pid: live.pid, startTime: live.startTime, snapPid: other.pid, snapStartTime: other.startTime, targetPid: live.pid });
    writeLock(processLockName(7, 1), { pid: 7, startTime: 1, snapPid: other.pid, snapStartTime: other.startTime, targetPid: 7 });
    writeLock(pidClaimName(8), { pid: 8, operation: 'restore', snapPid: other.pid, snapStartTime: other.startTime, targetPid: 8 });
    const j = openJournal({ pid: 4247, startTime: 0, bootId }, 'restore');
    expect(refusal(() => j.claimPids([7, live.pid])).oneLine()).toBe(`another snap (pid ${other.pid}) is already working on process ${live.pid} of this tree (its target); wait for it to finish`);
    expect(existsSync(join(dir, pidClaimName(7))), 'the claim taken before the refusal').toBe(false);
    expect(refusal(() => j.claimPids([8])).oneLine()).toBe(`another snap (pid ${other.pid}) is already restoring process 8 of this tree (its target); wait for it to finish`);
    j.claimPids([7, 4247]);
    expect(existsSync(join(dir, pidClaimName(7)))).toBe(true);
    j.remove();
    expect(readdirSync(dir).sort()).toEqual([processLockName(live.pid, live.startTime), processLockName(7, 1), pidClaimName(8)].sort());
  });
});

describe('what a restore records as restored', () => {
  it('each process is written to the journal at once, once, with its pid, start time and boot id', async () => {
    const [a, b] = [await sleeper(), await sleeper()];
    const j = openJournal({ pid: 4248, startTime: 0, bootId }, 'restore');
    const onDisk = () => (JSON.parse(readFileSync(j.path, 'utf8')) as JournalEntry).restored;
    expect(onDisk()).toBeUndefined();
    j.recordRestored([a]);
    expect(onDisk()).toEqual([a]);
    const inode = statSync(j.path).ino;
    j.recordRestored([a]);
    expect(statSync(j.path).ino, 'nothing new: the journal is not written again').toBe(inode);
    j.recordRestored([a, b, b]);
    expect(onDisk()).toEqual([a, b]);
    j.remove();
  });

  it('a recorded process is signalled only while its pid has the recorded start time', async () => {
    const [a] = [await sleeper()];
    expect(signalRecorded({ ...a, startTime: a.startTime - 1 }, 'SIGKILL')).toBe('reused');
    expect(signalRecorded({ ...a, bootId: 'another-boot' }, 'SIGKILL')).toBe('reused');
    expect(checkIdentity(a), 'the process after both refusals').toBe('same');
    expect(signalRecorded(a, 'SIGKILL')).toBe('signalled');
    await waitFor(() => signalRecorded(a, 'SIGKILL') === 'gone', { what: `sleep ${a.pid} to die` });
  });
});

describe('snap recover and the locks', () => {
  it('removes a dead snap\'s locks with its journal, and those whose journal is gone; leaves a live snap\'s and what it cannot read', async () => {
    const [target, member, other] = [await sleeper(), await sleeper(), await sleeper()];
    // A dump that died before it sent anything: a journal and two locks.
    const now = new Date().toISOString();
    const dead: JournalEntry = {
      version: 1, operation: 'dump', snapPid: DEAD_SNAP, snapStartTime: 5, target, originalState: 'running', restoreTo: 'running', step: 'preflight',
      touched: false, output: null, partialPath: null, workDir: null, toolPids: [], startedAt: now, updatedAt: now,
    };
    writeFileSync(join(dir, `target-${target.pid}.json`), JSON.stringify(dead));
    writeLock(processLockName(target.pid, target.startTime), { pid: target.pid, startTime: target.startTime, snapPid: DEAD_SNAP, snapStartTime: 5, targetPid: target.pid });
    writeLock(processLockName(member.pid, member.startTime), { pid: member.pid, startTime: member.startTime, snapPid: DEAD_SNAP, snapStartTime: 5, targetPid: target.pid });
    // Another dead snap's locks without a journal, a live snap's lock, and files that cannot be read.
    writeLock(processLockName(99, 3), { pid: 99, startTime: 3, snapPid: DEAD_SNAP, snapStartTime: 6, targetPid: 98 });
    writeLock(pidClaimName(97), { pid: 97, operation: 'restore', snapPid: DEAD_SNAP, snapStartTime: 6, targetPid: 98 });
    writeLock(processLockName(96, 3), { pid: 96, startTime: 3, snapPid: other.pid, snapStartTime: other.startTime, targetPid: 96 });
    writeFileSync(join(dir, processLockName(95, 3)), '');
    writeFileSync(join(dir, 'target-94.json'), '{"vers');
    writeFileSync(join(dir, `${processLockName(93, 3)}.tmp-${DEAD_SNAP}-0a1b2c3d`), '{"ver');

    const dry = await recoverAll({ dryRun: true });
    expect(dry.find((r) => r.targetPid === target.pid)?.actions).toContain(`would remove the locks on processes ${[target.pid, member.pid].sort((a, b) => a - b).join(', ')}`);
    expect(readdirSync(dir)).toHaveLength(9);

    const done = await recoverAll();
    const mine = done.find((r) => r.targetPid === target.pid)!;
    expect(mine.outcome).toBe('recovered');
    expect(mine.actions).toContain(`removed the locks on processes ${[target.pid, member.pid].sort((a, b) => a - b).join(', ')}`);
    const orphan = done.find((r) => r.targetPid === 98)!;
    expect(orphan.actions).toEqual([`snap ${DEAD_SNAP} is gone and left no journal`, 'removed the locks on processes 97, 99']);
    expect(done.filter((r) => r.outcome === 'unreadable').map((r) => r.actions[0]).sort()).toEqual([
      expect.stringMatching(/^left in place: the journal cannot be read; if no snap is working on target 94, remove \S+target-94\.json$/),
      expect.stringMatching(/^left in place: the lock \S+pid-95-3\.lock cannot be read; if no snap is running, remove it$/),
      'removed a half-written lock',
    ].sort());
    expect(readdirSync(dir).sort()).toEqual([processLockName(95, 3), processLockName(96, 3), 'target-94.json'].sort());
  });
});
