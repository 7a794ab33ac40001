// procsnap's names outside snapd's namespace: PROCSNAP_* variables (the SNAP_* of earlier versions still read, with
// one warning), journals in /run/procsnap (one an earlier version left in /run/snap still found and recovered), and
// the warning about journals left by a dead procsnap given only to a user who can act on them.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { captureIdentity, type TargetIdentity } from '../../src/process/identity.js';
import type { JournalEntry } from '../../src/pipelines/journal.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, snapEntry } from '../helpers/cli.js';
import { nodeBin } from '../helpers/paths.js';
import { waitFor } from '../helpers/target.js';

const DEAD_SNAP = 4_194_303; // above pid_max: no process has it
const NOBODY = 65534;

const sleepers: ChildProcess[] = [];
afterEach(() => {
  for (const s of sleepers.splice(0)) s.kill('SIGKILL');
});
afterAll(removeTempDirs);

/** A live process of root's for a journal to name. */
async function sleeper(): Promise<TargetIdentity> {
  // A session of its own: procsnap refuses a process whose session leader it cannot see.
  const child = spawn('/bin/sleep', ['60'], { stdio: 'ignore', detached: true });
  sleepers.push(child);
  const pid = child.pid!;
  return waitFor(() => (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep' ? captureIdentity(pid) : undefined), { what: `sleep ${pid} to exec` });
}

/** The journal a procsnap that died at the freeze leaves: the target stopped, to be put back running. */
function deadJournal(target: TargetIdentity): JournalEntry {
  const now = new Date().toISOString();
  return {
    version: 1, operation: 'dump', snapPid: DEAD_SNAP, snapStartTime: 1, target, originalState: 'running', restoreTo: 'running', step: 'checkpoint',
    touched: true, output: null, partialPath: null, workDir: null, toolPids: [], startedAt: now, updatedAt: now,
  };
}

function processState(pid: number): string {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0]!;
}

describe('configuration variables', () => {
  it('an old SNAP_JOURNAL_DIR still works: its journal is listed, with one deprecation warning naming PROCSNAP_JOURNAL_DIR', async () => {
    const dir = makeTempDir('snap-test-old-var-');
    const target = await sleeper();
    writeFileSync(join(dir, `target-${target.pid}.json`), JSON.stringify(deadJournal(target)));
    const run = await runSnap(['recover', '--list', '--json'], { env: { PROCSNAP_JOURNAL_DIR: undefined, SNAP_JOURNAL_DIR: dir, PROCSNAP_INVOKED_AS: 'procsnap' } });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).journals).toEqual([expect.objectContaining({ journal: join(dir, `target-${target.pid}.json`), targetPid: target.pid, status: 'left' })]);
    const warnings = run.stderr.split('\n').filter((l) => l.includes('deprecated'));
    expect(warnings).toEqual(['procsnap: warning: SNAP_JOURNAL_DIR is deprecated (SNAP_* belongs to snapd): rename it PROCSNAP_JOURNAL_DIR']);
  });

  it('PROCSNAP_JOURNAL_DIR wins over SNAP_JOURNAL_DIR, without a warning', async () => {
    const mine = makeTempDir('snap-test-new-var-');
    const old = makeTempDir('snap-test-old-var-');
    const target = await sleeper();
    writeFileSync(join(old, `target-${target.pid}.json`), JSON.stringify(deadJournal(target)));
    const run = await runSnap(['recover', '--list', '--json'], { env: { PROCSNAP_JOURNAL_DIR: mine, SNAP_JOURNAL_DIR: old } });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).journals).toEqual([]);
    expect(run.stderr).not.toContain('deprecated');
  });
});

describe('the journal directory', () => {
  it('a journal an earlier version left in /run/snap holds its target and is recovered: the target runs again, the journal is gone', async () => {
    const target = await sleeper();
    process.kill(target.pid, 'SIGSTOP');
    await waitFor(() => processState(target.pid) === 'T' || undefined, { what: 'the sleeper to stop' });
    const made = !existsSync('/run/snap');
    mkdirSync('/run/snap', { recursive: true, mode: 0o700 });
    const legacy = `/run/snap/target-${target.pid}.json`;
    writeFileSync(legacy, JSON.stringify(deadJournal(target)), { mode: 0o600 });
    try {
      const env = { PROCSNAP_JOURNAL_DIR: undefined, SNAP_JOURNAL_DIR: undefined, PROCSNAP_INVOKED_AS: 'procsnap' };
      const dump = await runSnap(['dump', String(target.pid), '-o', join(makeTempDir('snap-test-legacy-'), 'x.tar.zst')], { env });
      expect(dump.exitCode, dump.stderr).toBe(14);
      expect(dump.stderr).toMatch(/procsnap: error: a previous snap \(pid 4194303\) died while working on target \d+; run `procsnap recover` first/);
      const recover = await runSnap(['recover', String(target.pid), '--json'], { env });
      expect(recover.exitCode, recover.stderr).toBe(0);
      expect(JSON.parse(recover.stdout).recovered).toEqual([expect.objectContaining({ journal: legacy, targetPid: target.pid, outcome: 'recovered' })]);
      expect(existsSync(legacy)).toBe(false);
      await waitFor(() => processState(target.pid) !== 'T' || undefined, { what: 'the sleeper to run again' });
    } finally {
      rmSync(legacy, { force: true });
      if (made) rmdirSync('/run/snap');
    }
  });
});

describe('the warning about journals left by a procsnap that died', () => {
  const shared: string[] = [];
  afterAll(() => {
    for (const d of shared) rmSync(d, { recursive: true, force: true });
  });

  /** A journal directory another user can read, holding journals owned by that user. */
  async function sharedJournals(): Promise<{ dir: string; others: TargetIdentity; gone: TargetIdentity }> {
    // Outside the tests' private temporary directory, which no other user can enter.
    const dir = mkdtempSync('/tmp/snap-test-shared-journals-');
    shared.push(dir);
    chmodSync(dir, 0o755);
    const others = await sleeper(); // root's process: nobody cannot put it back
    const gone = { pid: DEAD_SNAP - 1, startTime: 1, bootId: others.bootId }; // no process has it
    for (const t of [others, gone]) {
      const path = join(dir, `target-${t.pid}.json`);
      writeFileSync(path, JSON.stringify(deadJournal(t)), { mode: 0o600 });
      chownSync(path, NOBODY, NOBODY);
    }
    return { dir, others, gone };
  }

  function runAsNobody(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
    const child = spawn('/usr/bin/setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--', nodeBin, snapEntry, ...args], {
      cwd: '/',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NO_COLOR: '1', HOME: '/', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  }

  it("a user is warned about their own journal of a target that is gone, never about another user's target", async () => {
    const { dir, others, gone } = await sharedJournals();
    const run = await runAsNobody(['help', 'version'], { PROCSNAP_JOURNAL_DIR: dir, PROCSNAP_INVOKED_AS: 'procsnap' });
    expect(run.code, run.stderr).toBe(0);
    const warning = run.stderr.split('\n').filter((l) => l.includes('left by a snap that died'));
    expect(warning).toEqual([`procsnap: warning: 1 target(s) left by a snap that died (${gone.pid}); run \`procsnap recover\` for all, or \`procsnap recover PID\` for one (\`procsnap recover --list\` shows them)`]);
    expect(run.stderr).not.toContain(String(others.pid));
  });

  it('root, who can act on every journal, is warned about both', async () => {
    const { dir, others, gone } = await sharedJournals();
    const run = await runSnap(['help', 'version'], { env: { PROCSNAP_JOURNAL_DIR: dir } });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(new RegExp(`2 target\\(s\\) left by a snap that died \\((${others.pid}, ${gone.pid}|${gone.pid}, ${others.pid})\\)`));
  });
});
