// `snap doctor` proves readiness: a canary holding a listening socket and an established connection is dumped, keeps
// its connections, and is restored after a kill. A criu that cannot do that makes the doctor fail, naming the step.
import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/doctor/checks.js';
import { makeTempDir } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { hostHasSysResource } from '../helpers/capabilities.js';

/** Processes whose cwd is a canary directory: none may be left behind, whatever the outcome. */
function canaryProcesses(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/cwd`).includes('snap-canary-')) out.push(Number(name));
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

const hasSysResource = hostHasSysResource();

describe('snap doctor', () => {
  it('dumps and restores the canary: every step ok, its connections working, nothing left; says what a missing capability rules out', async () => {
    const run = await runSnap(['doctor', '--json'], { env: { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-doctor-journal-') }, timeoutMs: 240_000 });
    expect(run.stdout.trim().startsWith('{'), `exit ${run.exitCode} ${run.signal ?? ''}\n${run.stderr}`).toBe(true);
    const report = JSON.parse(run.stdout) as DoctorReport;
    expect(run.exitCode, `${run.stderr}\n${JSON.stringify(report.problems)}`).toBe(0);
    expect(report.canary?.ok).toBe(true);
    expect(report.canary?.steps.map((s) => s.what)).toEqual([
      'start the canary', 'dump it', 'its connections work after the dump', 'restore it after a kill', 'the restored canary answers',
    ]);
    expect(report.canary?.steps.find((s) => s.what === 'dump it')?.detail).toMatch(/--tcp-established/);
    expect(report.ruledOut.some((r) => r.missing === 'CAP_SYS_RESOURCE')).toBe(!hasSysResource);
    expect(canaryProcesses()).toEqual([]);
  });

  it('a criu whose dump fails: exit 6, the problem names the canary step, nothing left', async () => {
    const criu = join(repoRoot, 'test', 'fixtures', 'fake-tools', 'criu-fail');
    const run = await runSnap(['doctor', '--json', '--criu', criu], { env: { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-doctor-journal-') }, timeoutMs: 240_000 });
    expect(run.exitCode, run.stderr).toBe(6);
    const report = JSON.parse(run.stdout) as DoctorReport;
    expect(report.problems.map((p) => p.what).join('\n')).toMatch(/canary .*failed at "dump it"/);
    expect(canaryProcesses()).toEqual([]);
  });

  it("criu's network lock left by a criu that is gone (an nftables table, an iptables rule): a problem naming each, with the command that removes it", async () => {
    // The shapes criu gives them (criu/netfilter.c, criu/net.c), on an address no test uses.
    const table = 'CRIU-0badc0de-dead-4bad-be';
    // A snap's own table, named after a snap that is gone (no process has pid 4194303 and start time 1).
    const mine = 'procsnap-4194303-1';
    const rule = ['INPUT', '-s', '127.0.0.77/32', '-d', '127.0.0.78/32', '-p', 'tcp', '-m', 'tcp', '--sport', '4077', '--dport', '4078', '-m', 'mark', '!', '--mark', '0xc114', '-j', 'DROP'];
    execFileSync('nft', ['add', 'table', 'inet', table]);
    execFileSync('nft', ['add', 'table', 'inet', mine]);
    execFileSync('iptables', ['-w', '-A', ...rule]);
    try {
      const run = await runSnap(['doctor', '--json', '--no-canary'], { timeoutMs: 60_000 });
      const report = JSON.parse(run.stdout) as DoctorReport;
      expect(run.exitCode, run.stderr).toBe(6);
      const problem = report.problems.find((p) => /network lock/.test(p.what));
      expect(problem?.what).toMatch(new RegExp(`nftables table inet ${table}`));
      expect(problem?.what).toMatch(/iptables -A INPUT -s 127\.0\.0\.77\/32 .*--mark 0xc114 -j DROP/);
      expect(problem?.fix).toContain(`nft delete table inet ${table}`);
      expect(problem?.what).toContain(`nftables table inet ${mine} (snap 4194303's)`);
      expect(problem?.fix).toContain(`nft delete table inet ${mine}`);
      expect(problem?.fix).toMatch(/iptables -D INPUT -s 127\.0\.0\.77\/32/);
      expect(report.networkLocks.every((l) => !l.ownerRunning)).toBe(true);
    } finally {
      execFileSync('nft', ['delete', 'table', 'inet', table]);
      execFileSync('nft', ['delete', 'table', 'inet', mine]);
      execFileSync('iptables', ['-w', '-D', ...rule]);
    }
    const after = await runSnap(['doctor', '--json', '--no-canary'], { timeoutMs: 60_000 });
    expect((JSON.parse(after.stdout) as DoctorReport).networkLocks).toEqual([]);
  });

  it('--no-canary only looks', async () => {
    const run = await runSnap(['doctor', '--json', '--no-canary'], { timeoutMs: 60_000 });
    const report = JSON.parse(run.stdout) as DoctorReport;
    expect(report.canary).toBeNull();
    expect(canaryProcesses()).toEqual([]);
  });

  it('run as procsnap: criu judged against 4.2 (what setup installs), every row aligned, the access line names CAP_SYS_RESOURCE, the verdict says procsnap', async () => {
    const run = await runSnap(['doctor', '--no-canary'], { timeoutMs: 60_000, env: { PROCSNAP_INVOKED_AS: 'procsnap' } });
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines.find((l) => /^\S+\s+criu\b/.test(l)), run.stdout).toMatch(/\(need >= 4\.2\)/);
    // Every row is MARK LABEL TEXT: the text starts in the same column whatever the label (iptables is the widest).
    const rows = lines.filter((l) => /^(ok  |FAIL|miss|    ) [a-z]+ +\S/.test(l));
    expect(rows.map((l) => /^.{5}[a-z]+/.exec(l)![0].trim().split(' ').at(-1))).toEqual(expect.arrayContaining(['criu', 'gdb', 'kernel', 'access', 'iptables', 'keys']));
    const columns = new Set(rows.map((l) => /^.{5}[a-z]+ +/.exec(l)![0].length));
    expect([...columns], run.stdout).toHaveLength(1);
    const access = lines.find((l) => /^\s+access /.test(l))!;
    expect(access).toContain(`CAP_SYS_RESOURCE ${hasSysResource ? 'yes' : 'no'}`);
    if (!hasSysResource) expect(run.stdout).toContain('without CAP_SYS_RESOURCE');
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(lines.at(-1)).toBe('procsnap can capture and restore processes on this host');
    expect(run.stdout + run.stderr).not.toMatch(/\bsnap (can|recover|doctor)\b/);
  });
});
