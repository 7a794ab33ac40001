// Restoring a bundle runs its images as root, so trust comes from a signature by a key this host trusts: --key, or the
// keys in the trusted-keys directory ($PROCSNAP_TRUSTED_KEYS). Unsigned, garbage-signed or foreign-signed bundles are
// refused with exit 11 before anything is extracted or run; --allow-unsigned restores one anyway, and says so.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RestoreResult } from '../../src/pipelines/restore/index.js';
import { makeSafeDir, makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap, startSnap, type SnapResult } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, processExists, startTarget, waitFor, type Target } from '../helpers/target.js';

let dir: string;
let work: string;
let trusted: string;
let journal: string;
let target: Target;
let signed: string;
let unsigned: string;
const restored: number[] = [];

function snap(args: string[], trustedDir = trusted): Promise<SnapResult> {
  const extra = args[0] === 'restore' ? ['--work-dir', work] : [];
  return runSnap([...args, ...extra], { env: { PROCSNAP_JOURNAL_DIR: journal, PROCSNAP_TRUSTED_KEYS: trustedDir } });
}

function expectRefusedBeforeAnything(run: SnapResult, needle: RegExp): void {
  expect(run.exitCode, run.stderr).toBe(11);
  const errors = run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'));
  expect(errors).toHaveLength(1);
  expect(errors[0]).toMatch(needle);
  expect(run.stderr).not.toContain('[start] Restore the tree with criu restore');
  expect(readdirSync(work), 'nothing extracted').toEqual([]);
  expect(processExists(target.pid), 'nothing of the bundle runs').toBe(false);
}

beforeAll(async () => {
  dir = makeTempDir('snap-trust-');
  work = makeTempDir('snap-trust-work-');
  journal = makeTempDir('snap-trust-journal-');
  // Not under the system temp dir: a trusted key below a world-writable directory is not trusted.
  trusted = join(makeSafeDir('snap-trust-'), 'trusted-keys');
  mkdirSync(trusted, { mode: 0o755 });
  for (const name of ['team', 'stranger']) expect((await snap(['keygen', join(dir, `${name}.key`)])).exitCode).toBe(0);
  target = await startTarget({ threads: 2, group: 'setsid' });
  signed = join(dir, 'signed.tar.zst');
  expect((await snap(['dump', String(target.pid), '-o', signed, '--sign', join(dir, 'team.key'), '--quiet'])).exitCode).toBe(0);
  // A bundle as an unsigned dump writes it: no signature entry at all.
  unsigned = await repackBundle(signed, join(dir, 'unsigned.tar.zst'), (extracted, manifest) => {
    rmSync(join(extracted, 'manifest.sig'));
    manifest.signed = false;
    writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  });
  await target.kill();
  await waitFor(() => !processExists(target.pid), { what: 'the target to be gone' });
});
afterEach(async () => {
  for (const pid of restored.splice(0)) await killPid(pid);
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    try {
      for (const c of childrenOf(p)) {
        out.push(c);
        queue.push(c);
      }
    } catch {
      // gone
    }
  }
  return out;
}

function expectRestored(run: SnapResult): RestoreResult {
  expect(run.exitCode, run.stderr).toBe(0);
  const result = JSON.parse(run.stdout) as RestoreResult;
  restored.push(result.pid);
  return result;
}

describe('restore trusts only signed bundles', () => {
  it('an unsigned bundle: refused with exit 11 before anything is extracted or run; --allow-unsigned restores it with a warning', async () => {
    expectRefusedBeforeAnything(await snap(['restore', unsigned]), /not signed.*--allow-unsigned/);
    const run = await snap(['restore', unsigned, '--allow-unsigned', '--json']);
    const result = expectRestored(run);
    expect(result.signedBy).toBeNull();
    expect(result.signature).toEqual({ state: 'unsigned' });
    expect(result.warnings.join('\n')).toMatch(/not signed/);
    // Said once, when trust is decided, not again after the preflight.
    expect(run.stderr.match(/warning: .*not signed/g)).toHaveLength(1);
    expect(result.warnings.filter((w) => /not signed/.test(w))).toHaveLength(1);
  });

  it('"signed": true beside a manifest.sig of 4,000 zero bytes: refused, with and without trusted keys', async () => {
    const garbage = await repackBundle(signed, join(dir, 'garbage.tar.zst'), (extracted) => writeFileSync(join(extracted, 'manifest.sig'), Buffer.alloc(4000)));
    expectRefusedBeforeAnything(await snap(['restore', garbage]), /signature invalid: manifest\.sig is 4000 bytes/);
    copyFileSync(join(dir, 'team.key.pub'), join(trusted, 'team.pub'));
    try {
      expectRefusedBeforeAnything(await snap(['restore', garbage]), /signature invalid: manifest\.sig is 4000 bytes/);
    } finally {
      writeFileSync(join(trusted, 'team.pub'), ''); // an empty file is not a key: the directory trusts nothing again
    }
  });

  it('signed by a key that is not trusted: refused; with --key of another key: refused', async () => {
    copyFileSync(join(dir, 'stranger.key.pub'), join(trusted, 'stranger.pub'));
    expectRefusedBeforeAnything(await snap(['restore', signed]), /signature present but not verified: none of the 1 trusted key/);
    expectRefusedBeforeAnything(await snap(['restore', signed, '--key', join(dir, 'stranger.key.pub')]), /signature does not match/);
  });

  it('signed, its key in the trusted directory: restored without --key, and the result names the key', async () => {
    const own = makeSafeDir('snap-trust-keys-');
    copyFileSync(join(dir, 'team.key.pub'), join(own, 'team.pub'));
    const result = expectRestored(await snap(['restore', signed, '--json'], own));
    expect(result.signedBy).toBe(join(own, 'team.pub'));
    expect(result.signature).toMatchObject({ state: 'verified', keyFile: join(own, 'team.pub'), fingerprint: expect.stringMatching(/^SHA256:[A-Za-z0-9+/]{43}$/) });
    expect(readFileSync(`/proc/${result.pid}/cmdline`, 'utf8')).toContain('worker');
  });

  it('two restores of one bundle at once: exactly one restores, the other is refused with a lock error, the winner lives', async () => {
    const own = makeSafeDir('snap-trust-keys-');
    copyFileSync(join(dir, 'team.key.pub'), join(own, 'team.pub'));
    const runs = await Promise.all([snap(['restore', signed, '--json'], own), snap(['restore', signed, '--json'], own)]);
    const winners = runs.filter((r) => r.exitCode === 0);
    const losers = runs.filter((r) => r.exitCode !== 0);
    expect(winners, runs.map((r) => r.stderr).join('\n----\n')).toHaveLength(1);
    const result = expectRestored(winners[0]!);
    expect(losers[0]!.exitCode, losers[0]!.stderr).toBe(14);
    expect(losers[0]!.stderr).toMatch(/already working on target/);
    await waitFor(() => processExists(result.pid), { what: 'the winner to be running' });
    expect(readFileSync(`/proc/${result.pid}/stat`, 'utf8')).not.toMatch(/\) [ZX] /);
  });

  it('snap killed with SIGKILL while criu restores: snap recover leaves nothing behind (no process of the tree, no work dir, no journal)', async () => {
    const own = makeSafeDir('snap-trust-keys-');
    copyFileSync(join(dir, 'team.key.pub'), join(own, 'team.pub'));
    const env = { PROCSNAP_JOURNAL_DIR: journal, PROCSNAP_TRUSTED_KEYS: own };
    const restoring = startSnap(['restore', signed, '--work-dir', work], { env });
    let seen = '';
    restoring.child.stderr!.on('data', (c: Buffer) => (seen += c.toString()));
    await waitFor(() => seen.includes('[start] Restore the tree with criu restore'), { what: 'the restore to reach criu', timeoutMs: 30_000 });
    restoring.child.kill('SIGKILL');
    await restoring.result;
    const left = readdirSync(journal);
    expect(left.filter((n) => /^target-\d+\.json$/.test(n)), 'the dead restore left its journal').toHaveLength(1);
    expect(left.filter((n) => /^pid-\d+\.lock$/.test(n)).length, 'and its claims on the pids of the tree').toBeGreaterThan(0);
    const recover = await runSnap(['recover'], { env });
    expect(recover.exitCode, recover.stderr).toBe(0);
    expect(readdirSync(journal)).toEqual([]);
    expect(readdirSync(work)).toEqual([]);
    await waitFor(() => !processExists(target.pid) || readFileSync(`/proc/${target.pid}/stat`, 'utf8').includes(') Z '), {
      what: 'no process of the restored tree to be left',
      timeoutMs: 10_000,
    });
  });

  it('the same with --new-pidns: snap recover kills unshare, criu and the restored copy', async () => {
    const own = makeSafeDir('snap-trust-keys-');
    copyFileSync(join(dir, 'team.key.pub'), join(own, 'team.pub'));
    const env = { PROCSNAP_JOURNAL_DIR: journal, PROCSNAP_TRUSTED_KEYS: own };
    const restoring = startSnap(['restore', signed, '--work-dir', work, '--new-pidns'], { env });
    let seen = '';
    restoring.child.stderr!.on('data', (c: Buffer) => (seen += c.toString()));
    await waitFor(() => seen.includes('[start] Restore the tree with criu restore'), { what: 'the restore to reach criu', timeoutMs: 30_000 });
    // The holder: the unshare snap started, with everything under it.
    const holder = await waitFor(() => childrenOf(restoring.child.pid!).find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('--mount-proc')), {
      what: 'unshare to start',
    });
    // Killed once the journal names the holder: from then on a dead snap has told recover what to clean up.
    await waitFor(() => readdirSync(journal).some((n) => readFileSync(join(journal, n), 'utf8').includes(`${holder}`)), { what: 'the journal to name unshare' });
    restoring.child.kill('SIGKILL');
    await restoring.result;
    const tree = [holder, ...descendantsOf(holder)];
    const recover = await runSnap(['recover'], { env });
    expect(recover.exitCode, recover.stderr).toBe(0);
    await waitFor(() => tree.every((p) => !processExists(p) || /\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'))), {
      what: `unshare, criu and the copy (${tree.join(', ')}) to be gone`,
      timeoutMs: 10_000,
      detail: () => `recover said: ${recover.stdout.trim()} | ${tree.map((p) => (processExists(p) ? `${p}: ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ')}` : `${p} gone`)).join('; ')}`,
    });
    expect(readdirSync(journal)).toEqual([]);
    expect(readdirSync(work)).toEqual([]);
  });

  it('snap verify says plainly when a signature is present but not verified', async () => {
    const run = await snap(['verify', signed]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/signature present but not verified/);
  });
});
