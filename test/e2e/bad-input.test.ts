// `snap dump` given something it must refuse: each case exits with its documented code, says so in one line on
// stderr (no stack trace), leaves no file behind, and never stops the running worker beside it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES, type ExitKind } from '../../src/errors.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runProgram, runSnap, snapEntry, type SnapResult } from '../helpers/cli.js';
import { nodeBin, repoRoot } from '../helpers/paths.js';
import { cleanupAllTargets, readProcFile, readProcStat, startTarget, waitFor, type Target } from '../helpers/target.js';

const fakeTool = (name: string) => join(repoRoot, 'test', 'fixtures', 'fake-tools', name);

let target: Target;
let journalDir: string;

beforeAll(async () => {
  target = await startTarget({ threads: 4, group: 'setsid' });
  journalDir = makeTempDir('snap-test-journal-');
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

/** Runs `sh -c SCRIPT` and collects its output as runSnap does; `exec` in the script makes snap's pid the shell's. */
const runShell = (script: string, env: Record<string, string>): Promise<SnapResult> => runProgram('/bin/sh', ['-c', script], { env });

/** A pid no process holds: one our own short-lived child had, waited for and reaped. */
async function reapedPid(): Promise<number> {
  const child = spawn('/bin/true', { stdio: 'ignore' });
  await once(child, 'exit');
  return child.pid!;
}

interface BadInput {
  name: string;
  kind: ExitKind;
  message: RegExp;
  /** Prepares the output directory; returns snap's arguments after `dump`. */
  args: (out: string) => string[] | Promise<string[]>;
  /** Runs snap itself rather than through runSnap (for the case that needs snap's own pid). */
  viaShell?: (out: string) => string;
}

const cases: BadInput[] = [
  {
    name: 'a pid that no process holds (just reaped)',
    kind: 'targetNotFound',
    message: /no process with pid \d+/,
    args: async (out) => [String(await reapedPid()), '-o', join(out, 'x.tar.zst')],
  },
  {
    name: 'a pid above kernel.pid_max',
    kind: 'targetNotFound',
    message: /no process with pid \d+/,
    args: (out) => [String(Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()) + 1), '-o', join(out, 'x.tar.zst')],
  },
  { name: 'pid 1', kind: 'targetRefused', message: /refusing to stop pid 1/, args: (out) => ['1', '-o', join(out, 'x.tar.zst')] },
  {
    name: "snap's own pid",
    kind: 'targetRefused',
    message: /refusing to dump snap itself/,
    args: () => [],
    // $$ is the shell's pid, and exec makes it snap's.
    viaShell: (out) => `exec '${nodeBin}' '${snapEntry}' dump $$ -o '${join(out, 'x.tar.zst')}'`,
  },
  { name: 'a pid that is not a number', kind: 'usage', message: /'12ab' is not a pid/, args: (out) => ['12ab', '-o', join(out, 'x.tar.zst')] },
  {
    name: '-o in a directory that does not exist',
    kind: 'output',
    message: /does not exist/,
    args: (out) => [String(target.pid), '-o', join(out, 'missing', 'x.tar.zst')],
  },
  {
    name: '-o under a path that is a file',
    kind: 'output',
    message: /is not a directory/,
    args: (out) => {
      writeFileSync(join(out, 'plain-file'), 'not a directory\n');
      return [String(target.pid), '-o', join(out, 'plain-file', 'x.tar.zst')];
    },
  },
  {
    name: '-o an existing file',
    kind: 'output',
    message: /already exists/,
    args: (out) => {
      writeFileSync(join(out, 'x.tar.zst'), 'precious\n');
      return [String(target.pid), '-o', join(out, 'x.tar.zst')];
    },
  },
  {
    name: '--criu /nonexistent',
    kind: 'toolMissing',
    message: /criu not found at \/nonexistent/,
    args: (out) => [String(target.pid), '-o', join(out, 'x.tar.zst'), '--criu', '/nonexistent'],
  },
  {
    name: '--gdb /nonexistent',
    kind: 'toolMissing',
    message: /gdb not found at \/nonexistent/,
    args: (out) => [String(target.pid), '-o', join(out, 'x.tar.zst'), '--gdb', '/nonexistent'],
  },
  {
    name: 'a criu older than 4 (3.17.1)',
    kind: 'toolMissing',
    message: /criu 3\.17\.1 .* is too old/,
    args: (out) => [String(target.pid), '-o', join(out, 'x.tar.zst'), '--criu', fakeTool('criu-too-old.sh')],
  },
  {
    name: 'a gdb older than 9 (8.1)',
    kind: 'toolMissing',
    message: /gdb 8\.1 .* is too old/,
    args: (out) => [String(target.pid), '-o', join(out, 'x.tar.zst'), '--gdb', fakeTool('gdb-too-old.sh')],
  },
];

describe('snap dump refuses bad input and leaves the target alone', () => {
  it.each(cases.map((c) => [c.name, EXIT_CODES[c.kind].code, c] as const))('%s: exit %i, one error line, target untouched', async (_name, code, c) => {
    const out = makeTempDir('snap-test-out-');
    const args = await c.args(out);
    const before = readdirSync(out).sort();
    const contentsBefore = before.map((f) => readFileSync(join(out, f), 'utf8'));
    const ticksBefore = target.readProgress().ticks;

    // Watch the bystander target the whole time snap runs: not one sample may show a stopped thread.
    const stoppedSeen: string[] = [];
    const watch = setInterval(() => {
      const states = target.threadStates();
      if (states.includes('T')) stoppedSeen.push(states.join(''));
    }, 1);
    let run: SnapResult;
    try {
      const env = { PROCSNAP_JOURNAL_DIR: journalDir };
      run = c.viaShell ? await runShell(c.viaShell(out), env) : await runSnap(['dump', ...args], { env });
    } finally {
      clearInterval(watch);
    }

    expect(run.exitCode, run.stderr).toBe(code);
    const errorLines = run.stderr.split('\n').filter((line) => line.startsWith('snap: error:'));
    expect(errorLines, run.stderr).toHaveLength(1);
    expect(errorLines[0]).toMatch(c.message);
    expect(run.stderr).not.toContain('    at ');
    expect(run.stdout).toBe('');

    expect(stoppedSeen).toEqual([]);
    expect(target.threadStates()).toHaveLength(4);
    await target.waitUntilTicksAdvance(3);
    expect(target.readProgress().ticks).toBeGreaterThan(ticksBefore);

    expect(readdirSync(out).sort()).toEqual(before); // no bundle, partial file or work directory
    expect(before.map((f) => readFileSync(join(out, f), 'utf8'))).toEqual(contentsBefore);
    expect(readdirSync(journalDir)).toEqual([]);
  });
});

describe('a process whose session leader is outside its PID namespace', () => {
  it('is refused before any signal (criu would freeze it, then fail), exit 4, the process never stopped', async () => {
    // unshare's child is init of a new PID namespace and still in our session, whose leader it cannot see.
    const holder = spawn('unshare', ['--pid', '--fork', '--kill-child', '--', 'sleep', '600'], { stdio: 'ignore' });
    await once(holder, 'spawn');
    try {
      const pid = await waitFor(
        () => {
          const child = Number(readProcFile(`/proc/${holder.pid}/task/${holder.pid}/children`)?.trim() || 0);
          return child > 0 && readProcStat(child)?.comm === 'sleep' ? child : undefined;
        },
        { what: 'the sleep inside the new PID namespace' },
      );
      expect(readProcFile(`/proc/${pid}/status`)).toMatch(/^NSsid:\s+\d+\s+0$/m);

      const out = makeTempDir('snap-test-out-');
      const states: string[] = [];
      const watch = setInterval(() => states.push(readProcStat(pid)?.state ?? '?'), 1);
      let run: SnapResult;
      try {
        run = await runSnap(['dump', String(pid), '-o', join(out, 'x.tar.zst')], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
      } finally {
        clearInterval(watch);
      }
      expect(run.exitCode, run.stderr).toBe(EXIT_CODES.targetRefused.code);
      const errorLines = run.stderr.split('\n').filter((line) => line.startsWith('snap: error:'));
      expect(errorLines).toHaveLength(1);
      expect(errorLines[0]).toMatch(new RegExp(`pid ${pid} \\(sleep\\) is in a session whose leader is outside its PID namespace`));
      expect(states.length).toBeGreaterThan(0);
      expect(states.filter((s) => s === 'T' || s === 't')).toEqual([]); // never stopped, never traced
      expect(readdirSync(out)).toEqual([]);
      expect(readdirSync(journalDir)).toEqual([]);
    } finally {
      holder.kill('SIGKILL'); // its namespace's init, the sleep, dies with it
      await once(holder, 'exit').catch(() => undefined);
    }
  });
});

describe('a path mistake outside dump exits 7 (output), naming the path, not 70', () => {
  it.each([
    ['keygen under a file', ['keygen', '/etc/passwd/team.key'], /\/etc\/passwd is not a directory; choose a path in a directory/],
    ['restore --work-dir that does not exist', ['restore', join(repoRoot, 'package.json'), '--work-dir', '/nonexistent-snap-dir', '--allow-unsigned'], /cannot make a work directory in \/nonexistent-snap-dir \(it does not exist\)/],
  ])('%s', async (_name, args, message) => {
    const run = await runSnap(args, { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(7);
    const errors = run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(message);
  });
});

describe('what is not a bundle, and what is not a command', () => {
  it.each([['verify'], ['inspect'], ['stacks']])('snap %s /proc/self/mem: exit 11 (bundleInvalid) with one line, not 70', async (command) => {
    const run = await runSnap([command, '/proc/self/mem'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(EXIT_CODES.bundleInvalid.code);
    const errors = run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'));
    expect(errors).toEqual([expect.stringMatching(/\/proc\/self\/mem is empty: not a snap bundle/)]);
  });

  it('procsnap restore /etc/passwd: exit 11, the error once, with what to do', async () => {
    const run = await runSnap(['restore', '/etc/passwd'], { env: { PROCSNAP_JOURNAL_DIR: journalDir, PROCSNAP_INVOKED_AS: 'procsnap' } });
    expect(run.exitCode, run.stderr).toBe(EXIT_CODES.bundleInvalid.code);
    expect(run.stderr.match(/is not a snap bundle/g), run.stderr).toHaveLength(1);
    const errors = run.stderr.split('\n').filter((l) => l.startsWith('procsnap: error:'));
    expect(errors).toEqual(['procsnap: error: /etc/passwd is not a snap bundle (neither zstd, gzip nor tar); give the path of a bundle written by `procsnap dump`']);
  });

  it("restore --criu-opt=--tcp-close is taken as snap's --tcp-close, not refused as a flag without a value", async () => {
    const run = await runSnap(['restore', '/etc/passwd', '--criu-opt=--tcp-close'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.stderr).not.toMatch(/expects a value/);
    expect(run.exitCode, run.stderr).toBe(EXIT_CODES.bundleInvalid.code);
  });

  it('a mistyped command: one line in snap\'s format naming the command meant, exit 2; with --json the same as a JSON error', async () => {
    const run = await runSnap(['dumpp', '4242'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode).toBe(2);
    expect(run.stderr.trim()).toBe('snap: error: unknown command "dumpp"; did you mean `snap dump`? `snap --help` lists the commands');
    const json = await runSnap(['inspekt', 'x.tar.zst', '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(json.exitCode).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({ error: expect.objectContaining({ kind: 'usage', exitCode: 2, message: 'unknown command "inspekt"', hint: expect.stringMatching(/did you mean `snap inspect`/) }) });
    const far = await runSnap(['frobnicate'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(far.exitCode).toBe(2);
    expect(far.stderr.trim()).toBe('snap: error: unknown command "frobnicate"; `snap --help` lists the commands');
  });
});
