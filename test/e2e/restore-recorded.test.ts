// A restore records each process criu makes (pid and start time) in its journal as soon as it can be seen: from the
// root's appearance as snap's child (--restore-sibling), before criu writes its pidfile, or from that pidfile. A failed
// restore, and `snap recover` after a restore that died, kill exactly those, and nothing else.
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RecoveryAction } from '../../src/pipelines/recover/index.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, startSnap, type RunningSnap } from '../helpers/cli.js';
import { REAL_CRIU } from '../helpers/faults.js';
import { cleanupAllTargets, killPid, processExists, readProcStat, startTarget, waitFor, type Target } from '../helpers/target.js';

interface Recorded {
  pid: number;
  startTime: number;
  bootId: string;
}

const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
let dir: string;
let work: string;
let journal: string;
let target: Target;
let bundle: string;
/** criu itself, then for a restore what PROCSNAP_TEST_AFTER says: exit 1 (a criu that failed after restoring the tree) or
 *  hold on (so snap can be killed with the tree restored). */
let wrapper: string;
/** An action script that holds criu just before it writes its pidfile: the tree is restored, no pidfile yet. */
let holdBeforePidfile: string;

function env(extra: Record<string, string> = {}): Record<string, string> {
  return { PROCSNAP_JOURNAL_DIR: journal, ...extra };
}

function restoreArgs(...extra: string[]): string[] {
  return ['restore', bundle, '--work-dir', work, '--allow-unsigned', ...extra];
}

/** Gone, or a zombie waiting for its parent. */
function gone(pid: number): boolean {
  return !processExists(pid) || /^[ZX]$/.test(readProcStat(pid)?.state ?? 'X');
}

const stderrs = new WeakMap<RunningSnap, string>();
function stderrOf(r: RunningSnap): string {
  return stderrs.get(r) ?? '';
}

/** The restored processes the dead-or-alive restore's journal records, once it records any. */
async function recordedInJournal(restoring: RunningSnap): Promise<Recorded[]> {
  restoring.child.stderr!.on('data', (c: Buffer) => stderrs.set(restoring, stderrOf(restoring) + c.toString()));
  return waitFor(() => {
    for (const name of readdirSync(journal).filter((n) => /^target-\d+\.json$/.test(n))) {
      try {
        const restored = (JSON.parse(readFileSync(join(journal, name), 'utf8')) as { restored?: Recorded[] }).restored;
        if (restored?.length) return restored;
      } catch {
        // replaced while read
      }
    }
    return undefined;
  }, { what: 'the journal to record the restored root', timeoutMs: 60_000, detail: () => `snap exited: ${restoring.child.exitCode}${stderrOf(restoring)}` });
}

async function recoverAndExpectKilled(pid: number): Promise<RecoveryAction> {
  const run = await runSnap(['recover', '--json'], { env: env() });
  expect(run.exitCode, run.stderr).toBe(0);
  const { recovered } = JSON.parse(run.stdout) as { recovered: RecoveryAction[] };
  expect(recovered, run.stdout).toHaveLength(1);
  expect(recovered[0]!.actions, run.stdout).toContain(`killed partly restored ${pid}`);
  await waitFor(() => gone(pid), { what: `restored ${pid} to be gone`, timeoutMs: 10_000 });
  expect(readdirSync(journal)).toEqual([]);
  expect(readdirSync(work)).toEqual([]);
  return recovered[0]!;
}

beforeAll(async () => {
  dir = makeTempDir('snap-recorded-');
  work = makeTempDir('snap-recorded-work-');
  journal = makeTempDir('snap-recorded-journal-');
  wrapper = join(dir, 'criu-wrapper');
  writeFileSync(
    wrapper,
    `#!/bin/sh\n[ "$1" = restore ] || exec ${REAL_CRIU} "$@"\n${REAL_CRIU} "$@"\ncase $PROCSNAP_TEST_AFTER in fail) exit 1 ;; hold) exec sleep 3600 ;; esac\n`,
  );
  chmodSync(wrapper, 0o755);
  holdBeforePidfile = join(dir, 'hold-before-pidfile.sh');
  writeFileSync(holdBeforePidfile, '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] && exec sleep 3600\nexit 0\n');
  chmodSync(holdBeforePidfile, 0o755);
  target = await startTarget({ threads: 2, group: 'setsid' });
  bundle = join(dir, 'b.tar.zst');
  const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--quiet'], { env: env() });
  expect(run.exitCode, run.stderr).toBe(0);
  await target.kill();
  await waitFor(() => !processExists(target.pid), { what: 'the target to be gone' });
});
afterEach(async () => {
  // The next restore needs the pid free: a zombie holds it until init reaps it.
  if (target && !gone(target.pid)) await killPid(target.pid, { timeoutMs: 30_000 });
  if (target) await waitFor(() => !processExists(target.pid), { what: `pid ${target.pid} to be free`, timeoutMs: 30_000 });
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

describe('a failed restore kills what it recorded', () => {
  it('criu restores the tree, then exits 1: exit 13, the process it made (from its pidfile) is killed', async () => {
    const run = await runSnap(restoreArgs('--criu', wrapper), { env: env({ PROCSNAP_TEST_AFTER: 'fail' }) });
    expect(run.exitCode, run.stderr).toBe(13);
    expect(run.stderr).toContain(`killed partly restored ${target.pid}`);
    await waitFor(() => gone(target.pid), { what: `restored ${target.pid} to be gone`, timeoutMs: 10_000 });
    expect(readdirSync(journal)).toEqual([]);
  });
});

describe('snap recover after a restore that died kills what its journal records', () => {
  it('killed after criu wrote its pidfile: the journal names the root with its start time; recover kills it', async () => {
    const restoring = startSnap(restoreArgs('--criu', wrapper), { env: env({ PROCSNAP_TEST_AFTER: 'hold' }) });
    const recorded = await recordedInJournal(restoring);
    expect(recorded).toEqual([{ pid: target.pid, startTime: readProcStat(target.pid)!.startTime, bootId }]);
    restoring.child.kill('SIGKILL');
    await restoring.result;
    await recoverAndExpectKilled(target.pid);
  });

  it('killed before criu wrote its pidfile: the root was recorded as the child criu made of snap; recover kills it', async () => {
    const restoring = startSnap(restoreArgs(`--criu-opt=--action-script=${holdBeforePidfile}`), { env: env() });
    const recorded = await recordedInJournal(restoring);
    expect(recorded).toEqual([{ pid: target.pid, startTime: readProcStat(target.pid)!.startTime, bootId }]);
    expect(readdirSync(work).flatMap((d) => readdirSync(join(work, d))), 'no pidfile yet').not.toContain('restored.pid');
    restoring.child.kill('SIGKILL');
    await restoring.result;
    await recoverAndExpectKilled(target.pid);
  });
});
