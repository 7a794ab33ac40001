// Starts the worker fixture (test/fixtures/worker.c) and watches it through /proc and its progress file.
// This is the tests' own view of a target, kept independent of src/ so that it can judge what src/ did.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { requireFixtureBin } from './paths.js';

export interface WaitOptions {
  what: string;
  timeoutMs?: number;
  intervalMs?: number;
  /** Appended to the timeout error: what was seen last, so a failure explains itself. */
  detail?: () => string;
}

/** Polls `probe` until it returns something other than undefined or false, and returns that. */
export async function waitFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  { what, timeoutMs = 5000, intervalMs = 10, detail }: WaitOptions,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const seen = await probe();
    if (seen !== undefined && seen !== false) return seen;
    if (performance.now() >= deadline) {
      const extra = detail ? `: ${detail()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${extra}`);
    }
    await sleep(intervalMs);
  }
}

/** /proc/PID/stat, with `fields[n]` numbered as in proc(5): fields[3] is the state, fields[22] the start time. */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  tpgid: number;
  numThreads: number;
  startTime: number;
  fields: string[];
}

export function parseProcStat(line: string): ProcStat {
  // comm is free text ("a) R (b" is a legal name), so it ends at the LAST ')'.
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc stat line: ${JSON.stringify(line)}`);
  const comm = line.slice(open + 1, close);
  const fields = ['', line.slice(0, open).trim(), comm, ...line.slice(close + 1).trim().split(' ')];
  const numberAt = (n: number): number => Number(fields[n]);
  return {
    pid: numberAt(1),
    comm,
    state: fields[3] ?? '?',
    ppid: numberAt(4),
    pgrp: numberAt(5),
    session: numberAt(6),
    tpgid: numberAt(8),
    numThreads: numberAt(20),
    startTime: numberAt(22),
    fields,
  };
}

/** Reads a /proc file of a process that may exit at any moment; undefined once it is gone. */
export function readProcFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw error;
  }
}

export function readProcStat(pid: number): ProcStat | undefined {
  const line = readProcFile(`/proc/${pid}/stat`);
  return line === undefined ? undefined : parseProcStat(line);
}

/** True while `pid` names a process (zombies included: a zombie still holds its PID, so CRIU cannot reuse it). */
export function processExists(pid: number): boolean {
  // /proc/TID exists for every thread too, although readdir does not list it; only a process is its own Tgid.
  const status = readProcFile(`/proc/${pid}/status`);
  return status !== undefined && new RegExp(`^Tgid:\\s+${pid}$`, 'm').test(status);
}

/** The state letter of every thread of `pid` (R, S, D, T, t, Z...); empty once the process is gone. */
export function readThreadStates(pid: number): string[] {
  let taskIds: string[];
  try {
    taskIds = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const states: string[] = [];
  for (const tid of taskIds) {
    const line = readProcFile(`/proc/${pid}/task/${tid}/stat`);
    if (line !== undefined) states.push(parseProcStat(line).state); // a thread that just exited is skipped
  }
  return states;
}

function describeProcess(pid: number): string {
  const stat = readProcStat(pid);
  if (stat === undefined) return `process ${pid} is gone`;
  return `process ${pid} (${stat.comm}) state ${stat.state}, ppid ${stat.ppid}, threads ${readThreadStates(pid).join('')}`;
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** Kills a process that is not our child (a restored target): SIGKILL, then wait until its PID is free. */
export async function killPid(pid: number, { timeoutMs = 10_000 }: { timeoutMs?: number } = {}): Promise<void> {
  sendSignal(pid, 'SIGKILL');
  await waitFor(() => !processExists(pid), {
    what: `process ${pid} to be gone after SIGKILL`,
    timeoutMs,
    detail: () => `${describeProcess(pid)} (a zombie stays until its parent reaps it)`,
  });
}

export interface TargetOptions {
  /** Threads in total, the main thread included. */
  threads?: number;
  mib?: number;
  tickMs?: number;
  dirtyKib?: number;
  /** 'own-pgrp': a shell job, its own process group in our session, so SIGTSTP really pauses it.
   *  'setsid': a daemon, its own session; its process group is orphaned, so the kernel drops SIGTSTP.
   *  Unset: it stays in our process group. */
  group?: 'setsid' | 'own-pgrp';
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/** One record of the worker's progress file (see write_progress in worker.c). */
export interface Progress {
  ticks: number;
  maxGapUs: number;
  lastGapUs: number;
  /** How many SIGUSR1 max-gap resets the worker has carried out. */
  resets: number;
  pid: number;
  threads: number;
  /** One per worker thread (threads - 1 of them), in thread order. */
  counters: number[];
  /** True when there were more counters than fit in the record's 256 bytes. */
  countersTruncated: boolean;
}

export const PROGRESS_RECORD_BYTES = 256;

const progressRecordPattern =
  /^ticks=(\d{20}) maxgap_us=(\d{12}) lastgap_us=(\d{12}) resets=(\d{6}) pid=(\d{10}) threads=(\d{3}) counters=([\d,]*?)(,\.\.\.)? *\n$/;

export function parseProgressRecord(record: string): Progress | undefined {
  if (record.length !== PROGRESS_RECORD_BYTES) return undefined;
  const match = progressRecordPattern.exec(record);
  if (match === null) return undefined;
  const [, ticks, maxGapUs, lastGapUs, resets, pid, threads, counters, truncated] = match;
  return {
    ticks: Number(ticks),
    maxGapUs: Number(maxGapUs),
    lastGapUs: Number(lastGapUs),
    resets: Number(resets),
    pid: Number(pid),
    threads: Number(threads),
    counters: counters ? counters.split(',').map(Number) : [],
    countersTruncated: truncated !== undefined,
  };
}

const liveTargets = new Set<Target>();

export class Target {
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    readonly child: ChildProcess,
    readonly pid: number,
    readonly threads: number,
    /** The private temporary directory that holds the progress file. */
    readonly dir: string,
    readonly progressPath: string,
  ) {
    child.once('exit', (code, signal) => {
      this.exitStatus = { code, signal };
    });
  }

  /** How our child ended, once Node has reaped it; a restored incarnation is never our child. */
  get childExit(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.exitStatus;
  }

  /** The latest progress record, or undefined while the file holds none (before the worker is ready). */
  tryReadProgress(): Progress | undefined {
    // pwrite and read of a regular file are not atomic with each other: a torn record fails the pattern, so retry.
    for (let attempt = 0; attempt < 5; attempt++) {
      const record = readProcFile(this.progressPath);
      if (record === undefined) return undefined;
      const progress = parseProgressRecord(record);
      if (progress !== undefined) return progress;
    }
    return undefined;
  }

  readProgress(): Progress {
    const progress = this.tryReadProgress();
    if (progress === undefined) {
      const record = readProcFile(this.progressPath);
      throw new Error(`${this.progressPath} holds no progress record: ${JSON.stringify(record?.slice(0, 300))}`);
    }
    return progress;
  }

  stat(): ProcStat | undefined {
    return readProcStat(this.pid);
  }

  threadStates(): string[] {
    return readThreadStates(this.pid);
  }

  processState(): string | undefined {
    return readProcStat(this.pid)?.state;
  }

  /** Field 22 of /proc/PID/stat: with the PID, what tells this process from a later one with the same PID. */
  startTime(): number | undefined {
    return readProcStat(this.pid)?.startTime;
  }

  /** True if the process holding our PID is this target: our child, or a restored incarnation of it. */
  isAlive(): boolean {
    if (!processExists(this.pid)) return false;
    if (this.exitStatus === undefined) return true;
    // Our child has exited, so whoever holds the PID now is ours only if it runs with our private progress file.
    const cmdline = readProcFile(`/proc/${this.pid}/cmdline`);
    return cmdline !== undefined && cmdline.split('\0').includes(this.progressPath);
  }

  signal(signal: NodeJS.Signals): void {
    sendSignal(this.pid, signal);
  }

  /** Pauses the target and waits until every thread shows T. A job-control stop (SIGTSTP, SIGTTIN, SIGTTOU) the
   *  kernel discarded (orphaned process group: a setsid target) never gets there, and this throws. */
  async pauseWith(signal: 'SIGSTOP' | 'SIGTSTP' | 'SIGTTIN' | 'SIGTTOU', { timeoutMs = 3000 }: { timeoutMs?: number } = {}): Promise<void> {
    this.signal(signal);
    await waitFor(
      () => {
        const states = this.threadStates();
        return states.length > 0 && states.every((state) => state === 'T');
      },
      {
        what: `every thread of target ${this.pid} to stop after ${signal}`,
        timeoutMs,
        detail: () =>
          `thread states ${this.threadStates().join(',') || 'none'}` +
          (signal !== 'SIGSTOP'
            ? `; the kernel discards ${signal} sent to an orphaned process group (a setsid target is one)`
            : ''),
      },
    );
  }

  async resume({ timeoutMs = 3000 }: { timeoutMs?: number } = {}): Promise<void> {
    this.signal('SIGCONT');
    await waitFor(
      () => {
        const states = this.threadStates();
        return states.length > 0 && states.every((state) => state !== 'T');
      },
      {
        what: `every thread of target ${this.pid} to run again after SIGCONT`,
        timeoutMs,
        detail: () => `thread states ${this.threadStates().join(',') || 'none'}`,
      },
    );
  }

  /** Waits until the main thread has ticked `byAtLeast` more times than now: proof that the target is running. */
  async waitUntilTicksAdvance(byAtLeast = 1, timeoutMs = 5000): Promise<Progress> {
    const start = this.readProgress().ticks;
    return waitFor(
      () => {
        const progress = this.tryReadProgress();
        return progress !== undefined && progress.ticks >= start + byAtLeast && progress;
      },
      {
        what: `target ${this.pid} to tick ${byAtLeast} times past ${start}`,
        timeoutMs,
        detail: () => `ticks now ${this.tryReadProgress()?.ticks}; ${describeProcess(this.pid)}`,
      },
    );
  }

  /** SIGUSR1: the worker forgets the longest gap it has seen. Resolves with the first record after the reset. */
  async resetMaxGap(timeoutMs = 5000): Promise<Progress> {
    const resetsBefore = this.readProgress().resets;
    this.signal('SIGUSR1');
    return waitFor(
      () => {
        const progress = this.tryReadProgress();
        return progress !== undefined && progress.resets > resetsBefore && progress;
      },
      { what: `target ${this.pid} to reset its max gap`, timeoutMs, detail: () => describeProcess(this.pid) },
    );
  }

  /** SIGKILL, then wait until the PID is free again (our child reaped, or a restored incarnation gone), so a
   *  later CRIU restore can take the same PID. */
  async kill({ timeoutMs = 10_000 }: { timeoutMs?: number } = {}): Promise<void> {
    if (this.exitStatus === undefined) {
      sendSignal(this.pid, 'SIGKILL');
      await waitFor(() => this.exitStatus !== undefined, {
        what: `target ${this.pid} to be reaped after SIGKILL`,
        timeoutMs,
        detail: () => describeProcess(this.pid),
      });
    }
    if (this.isAlive()) await killPid(this.pid, { timeoutMs });
    await waitFor(() => !processExists(this.pid), {
      what: `PID ${this.pid} to be free`,
      timeoutMs,
      detail: () => describeProcess(this.pid),
    });
  }

  async cleanup(): Promise<void> {
    try {
      if (this.exitStatus === undefined || this.isAlive()) await this.kill();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
      liveTargets.delete(this);
    }
  }
}

export async function startTarget(options: TargetOptions = {}): Promise<Target> {
  const { threads = 4, mib = 16, tickMs = 10, dirtyKib = 0, group, env = {} } = options;
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000 + mib * 10; // filling 2 GiB took 1-7 s here
  const worker = requireFixtureBin('worker');
  const dir = mkdtempSync(join(tmpdir(), 'snap-target-'));
  const progressPath = join(dir, 'progress');
  const args = ['--threads', String(threads), '--mib', String(mib), '--progress', progressPath];
  args.push('--tick-ms', String(tickMs), '--dirty-kib', String(dirtyKib));
  if (group === 'setsid') args.push('--setsid');
  if (group === 'own-pgrp') args.push('--own-pgrp');

  // Not detached: detached means setsid, and the worker must choose its own group for 'own-pgrp' to stay in our
  // session (only then is its process group not orphaned and SIGTSTP not discarded).
  const child = spawn(worker, args, { stdio: 'ignore', env: { ...process.env, ...env } });
  try {
    await once(child, 'spawn');
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const target = new Target(child, child.pid!, threads, dir, progressPath);
  liveTargets.add(target);

  try {
    await waitFor(
      () => {
        const exit = target.childExit;
        if (exit) throw new Error(`worker ${args.join(' ')} exited before it was ready (code ${exit.code}, signal ${exit.signal})`);
        const progress = target.tryReadProgress();
        return progress !== undefined && progress.ticks >= 1 && target.threadStates().length === threads;
      },
      {
        what: `worker ${target.pid} to be ready (progress ticks >= 1 and ${threads} tasks)`,
        timeoutMs: readyTimeoutMs,
        detail: () => describeProcess(target.pid),
      },
    );
    const stat = target.stat();
    if (group === 'own-pgrp' && stat?.session === 0)
      throw new Error(`worker ${target.pid} is in a session whose leader is outside this PID namespace, which criu refuses; run the suite with npm test`);
    const grouped =
      group === 'setsid' ? stat?.session === target.pid : group === 'own-pgrp' ? stat?.pgrp === target.pid && stat.session !== target.pid : true;
    if (!grouped) throw new Error(`worker ${target.pid} is not in the ${group} arrangement: pgrp ${stat?.pgrp}, session ${stat?.session}`);
  } catch (error) {
    await target.cleanup();
    throw error;
  }
  return target;
}

/** Kills every target still alive and removes their directories; for afterEach/afterAll. */
export async function cleanupAllTargets(): Promise<void> {
  const outcomes = await Promise.allSettled([...liveTargets].map((target) => target.cleanup()));
  const failures = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason] : []));
  if (failures.length > 0) throw new AggregateError(failures, `${failures.length} target(s) could not be cleaned up`);
}

// Last resort when a test worker exits without its hooks running: no worker outlives the test run.
process.once('exit', () => {
  for (const target of liveTargets) {
    try {
      if (target.childExit === undefined || target.isAlive()) process.kill(target.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});
