// The fault-injection harness: runs `snap dump` with fake or real tools, watches it from outside (its stderr, the
// fakes' marker file, /proc), signals it at a chosen moment, and checks what it left behind: target state, leftover
// processes, files, journal, exit code and the one-line message.
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { makeTempDir } from './bundle.js';
import { repoRoot, startSnap, type RunningSnap, type SnapResult } from './cli.js';
import { readProcStat, startTarget, waitFor, type Target } from './target.js';

export const FAKE_TOOLS = join(repoRoot, 'test', 'fixtures', 'fake-tools');
export const REAL_CRIU = '/usr/local/sbin/criu';
export const REAL_GDB = '/usr/bin/gdb';

/** A fake tool by its link name (criu-hang, gdb-nocore, ...; see test/fixtures/fake-tools/fake-tool). */
export function fake(name: string): string {
  const path = join(FAKE_TOOLS, name);
  if (!existsSync(path)) throw new Error(`no fake tool ${path}`);
  return path;
}

export interface MarkerLine {
  pid: number;
  mode: string;
  args: string;
}

export interface DumpOptions {
  criu?: string;
  gdb?: string;
  /** More snap arguments (--timeout 5, --compression none, ...). */
  args?: string[];
  env?: Record<string, string | undefined>;
  /** A journal directory; null for snap's default (/run/procsnap as root). Default: a private temporary one. */
  journalDir?: string | null;
  /** The directory the bundle goes to; default: a fresh temporary one. */
  outDir?: string;
  outName?: string;
}

/** One `snap dump` under test. Every process it starts carries PROCSNAP_TEST_RUN=token in its environment. */
export class DumpUnderTest {
  readonly token = `snap-fault-${process.pid}-${randomBytes(6).toString('hex')}`;
  readonly outDir: string;
  readonly output: string;
  readonly journalDir: string | null;
  readonly marker: string;
  readonly snap: RunningSnap;
  private stderrText = '';
  /** performance.now() when signal() last sent a signal, and when snap exited. */
  signalledAt?: number;
  exitedAt?: number;
  readonly startedAt = performance.now();

  constructor(readonly target: Target, o: DumpOptions = {}) {
    this.outDir = o.outDir ?? makeTempDir('snap-fault-out-');
    this.output = join(this.outDir, o.outName ?? 'x.tar.zst');
    this.journalDir = o.journalDir === undefined ? makeTempDir('snap-fault-journal-') : o.journalDir;
    this.marker = join(makeTempDir('snap-fault-marker-'), 'marker');
    const args = ['dump', String(target.pid), '-o', this.output];
    if (o.criu) args.push('--criu', o.criu);
    if (o.gdb) args.push('--gdb', o.gdb);
    // A gdb given is a gdb under test: its cores are the ones written while the tree is frozen.
    const coreChosen = (o.args ?? []).some((a) => a === '--core' || a === '--short-freeze' || a === '--core-only');
    if (o.gdb && !coreChosen) args.push('--core', 'gcore');
    args.push(...(o.args ?? []));
    this.snap = startSnap(args, {
      env: {
        PROCSNAP_JOURNAL_DIR: this.journalDir ?? undefined,
        PROCSNAP_FAKE_MARKER: this.marker,
        PROCSNAP_TEST_RUN: this.token,
        ...o.env,
      },
    });
    this.snap.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderrText += chunk.toString('utf8');
    });
    this.snap.child.once('exit', () => {
      this.exitedAt = performance.now();
    });
  }

  /** Milliseconds from the last signal() to snap's exit (after `await result`). */
  get signalToExitMs(): number {
    return (this.exitedAt ?? Number.NaN) - (this.signalledAt ?? Number.NaN);
  }

  /** Milliseconds from starting snap to its exit (after `await result`). */
  get runMs(): number {
    return (this.exitedAt ?? Number.NaN) - this.startedAt;
  }

  partialExists(): boolean {
    return readdirSync(this.outDir).some((n) => n.includes('.partial-'));
  }

  get pid(): number {
    return this.snap.child.pid!;
  }

  get stderr(): string {
    return this.stderrText;
  }

  get result(): Promise<SnapResult> {
    return this.snap.result;
  }

  markerLines(): MarkerLine[] {
    let text = '';
    try {
      text = readFileSync(this.marker, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [pid, mode, ...rest] = line.split(' ');
        return { pid: Number(pid), mode: mode ?? '', args: rest.join(' ') };
      });
  }

  /** Waits until a fake has started its step (it wrote its marker line); fails early if snap has already exited. */
  async waitForMarker(what: string, match: (m: MarkerLine) => boolean = () => true, timeoutMs = 30_000): Promise<MarkerLine> {
    return waitFor(
      () => {
        const found = this.markerLines().find(match);
        if (found) return found;
        if (this.snap.child.exitCode !== null) throw new Error(`snap exited (${this.snap.child.exitCode}) before ${what}:\n${this.stderr}`);
        return undefined;
      },
      { what, timeoutMs, detail: () => `stderr so far:\n${this.stderr}` },
    );
  }

  async waitForStderr(pattern: RegExp, timeoutMs = 60_000): Promise<void> {
    await waitFor(
      () => {
        if (pattern.test(this.stderr)) return true;
        if (this.snap.child.exitCode !== null) throw new Error(`snap exited (${this.snap.child.exitCode}) before printing ${pattern}:\n${this.stderr}`);
        return undefined;
      },
      { what: `snap to print ${pattern}`, timeoutMs, detail: () => `stderr so far:\n${this.stderr}` },
    );
  }

  /** The work directory snap made beside the output (.NAME.work-XXXXXX), once it exists. */
  workDir(): string | undefined {
    const name = readdirSync(this.outDir).find((n) => n.includes('.work-'));
    return name === undefined ? undefined : join(this.outDir, name);
  }

  /** Bytes written so far to a file in the work directory (0 while it does not exist). */
  workFileSize(relative: (names: string[]) => string | undefined, sub = ''): number {
    const work = this.workDir();
    if (!work) return 0;
    try {
      const dir = join(work, sub);
      const name = relative(readdirSync(dir));
      return name === undefined ? 0 : statSync(join(dir, name)).size;
    } catch {
      return 0;
    }
  }

  /** A file of the work directory as text ('' while it does not exist). */
  workFileText(relative: string): string {
    const work = this.workDir();
    if (!work) return '';
    try {
      return readFileSync(join(work, relative), 'utf8');
    } catch {
      return '';
    }
  }

  signal(signal: NodeJS.Signals): void {
    this.signalledAt = performance.now();
    this.snap.child.kill(signal);
  }
}

export function startDump(target: Target, o: DumpOptions = {}): DumpUnderTest {
  return new DumpUnderTest(target, o);
}

/** The tracer of a process (0 when none), from /proc/PID/status. */
export function tracerOf(pid: number): number {
  try {
    const m = /^TracerPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
}

/** Waits until the target is traced by a process whose executable matches `exe` (gdb attached, criu seized it). */
export async function waitUntilTracedBy(target: Target, exe: RegExp, dump: DumpUnderTest, timeoutMs = 30_000): Promise<number> {
  return waitFor(
    () => {
      const tracer = tracerOf(target.pid);
      if (tracer !== 0 && exe.test(exeOf(tracer))) return tracer;
      if (dump.snap.child.exitCode !== null) throw new Error(`snap exited (${dump.snap.child.exitCode}) before the target was traced:\n${dump.stderr}`);
      return undefined;
    },
    { what: `target ${target.pid} to be traced by ${exe}`, timeoutMs, intervalMs: 2, detail: () => `tracer ${tracerOf(target.pid)}; stderr:\n${dump.stderr}` },
  );
}

/** Running again: no thread stopped, nobody tracing it; resolves with the time it took since `since`. */
export async function waitUntilRunning(target: Target, since: number, timeoutMs = 10_000): Promise<number> {
  await waitFor(
    () => {
      const states = target.threadStates();
      return states.length === target.threads && states.every((s) => s !== 'T' && s !== 't') && tracerOf(target.pid) === 0;
    },
    { what: `target ${target.pid} to run again`, timeoutMs, intervalMs: 2, detail: () => `thread states ${target.threadStates().join(',')}, tracer ${tracerOf(target.pid)}` },
  );
  return performance.now() - since;
}

/** The target runs and its work goes on. */
export async function expectRunning(target: Target): Promise<void> {
  await waitUntilRunning(target, performance.now(), 5000);
  await target.waitUntilTicksAdvance(3);
}

/** The target is stopped (every thread T, nobody tracing it) and does not advance over ~200 ms. */
export async function expectStopped(target: Target): Promise<void> {
  await waitFor(
    () => {
      const states = target.threadStates();
      return states.length === target.threads && states.every((s) => s === 'T') && tracerOf(target.pid) === 0;
    },
    { what: `target ${target.pid} to be stopped and untraced`, timeoutMs: 5000, detail: () => `thread states ${target.threadStates().join(',')}, tracer ${tracerOf(target.pid)}` },
  );
  const before = target.readProgress().ticks;
  await new Promise((r) => setTimeout(r, 200));
  expect(target.readProgress().ticks).toBe(before);
}

/** Live processes (zombies are dead: init reaps them in its own time) with PROCSNAP_TEST_RUN=token in their environment. */
export function processesOfRun(token: string, extraPgids: number[] = []): string[] {
  const found: string[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const stat = readProcStat(pid);
    if (!stat || stat.state === 'Z' || stat.state === 'X') continue;
    let environ = '';
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      // gone, or a kernel thread
    }
    if (environ.split('\0').includes(`PROCSNAP_TEST_RUN=${token}`) || extraPgids.includes(stat.pgrp)) {
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim();
      } catch {
        // gone
      }
      found.push(`${pid} (pgrp ${stat.pgrp}, ${stat.state}): ${cmd.slice(0, 160)}`);
    }
  }
  return found;
}

/** No process snap started (tool, tool's child, probe) is left, polling briefly: the kernel needs a moment. */
export async function expectNoLeftovers(dump: DumpUnderTest): Promise<void> {
  const pgids = dump.markerLines().map((m) => m.pid);
  let left: string[] = [];
  const clean = await waitFor(
    () => {
      left = processesOfRun(dump.token, pgids);
      return left.length === 0;
    },
    { what: 'no process of the run to be left', timeoutMs: 3000, intervalMs: 20 },
  ).catch(() => false);
  expect(clean ? [] : left, 'processes left behind by snap').toEqual([]);
}

/** Nothing under the final name and nothing else in the output directory: no partial file, no work directory. */
export function expectNoOutput(dump: DumpUnderTest, allowed: string[] = []): void {
  expect(existsSync(dump.output), `${dump.output} must not exist`).toBe(false);
  expect(readdirSync(dump.outDir).filter((n) => !allowed.includes(n))).toEqual([]);
}

export function expectNoJournal(dump: DumpUnderTest): void {
  const dir = dump.journalDir ?? '/run/procsnap';
  const mine = existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith(`target-${dump.target.pid}.`)) : [];
  expect(mine, `journal of target ${dump.target.pid} in ${dir}`).toEqual([]);
}

/** Exactly one `snap: error:` line, printable (no escape or control characters), matching `pattern`. */
export function expectOneErrorLine(result: SnapResult, pattern: RegExp): string {
  const lines = result.stderr.split('\n').filter((l) => l.startsWith('snap: error: '));
  expect(lines, `error lines in:\n${result.stderr}`).toHaveLength(1);
  const line = lines[0]!;
  // eslint-disable-next-line no-control-regex
  expect(line, 'the message is one printable line').not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
  expect(line).toMatch(pattern);
  return line;
}

/** Everything a failed or interrupted dump must leave: the exit code, one line, no bundle, no process, no journal. */
export async function expectCleanFailure(dump: DumpUnderTest, result: SnapResult, exitCode: number, message: RegExp): Promise<string> {
  expect(result.exitCode, `exit code; stderr:\n${result.stderr}`).toBe(exitCode);
  const line = expectOneErrorLine(result, message);
  await expectNoLeftovers(dump);
  expectNoOutput(dump);
  expectNoJournal(dump);
  return line;
}

/** Timings worth reporting, printed once at the end of the file that collected them. */
export const measured: string[] = [];
export function record(line: string): void {
  measured.push(line);
  console.log(`[measured] ${line}`);
}

/** Starts a worker under a given pid, free by now: ns_last_pid set to pid - 1 just before the fork (root only). */
export async function startTargetWithPid(pid: number): Promise<Target> {
  // The pid is handed out again only once nothing holds it: the old process fully reaped.
  await waitFor(() => !existsSync(`/proc/${pid}`), { what: `pid ${pid} to be free`, timeoutMs: 10_000 });
  for (let attempt = 0; attempt < 50; attempt++) {
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const t = await startTarget({ threads: 4, group: 'setsid' });
    if (t.pid === pid) return t;
    await t.cleanup(); // another fork on the machine took it first
  }
  throw new Error(`could not start a process with pid ${pid}`);
}
