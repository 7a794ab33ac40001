// Runs the built CLI the way a person would (node bin/run.js ARGS from the repo root) and collects what it printed.
// Never throws on a non-zero exit: the exit code is part of what the tests check.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { nodeBin, repoRoot } from './paths.js';

export { fixtureBin, repoRoot } from './paths.js';

export const snapEntry = join(repoRoot, 'bin', 'run.js');

export interface SnapRunOptions {
  /** Added to (and overriding) the test process's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** After this, snap gets SIGTERM (its chance to put the target back), then SIGKILL 5 s later. */
  timeoutMs?: number;
  /** Written to snap's stdin, which is then closed; without it stdin is closed at once. */
  input?: string | Buffer;
}

export interface SnapResult {
  /** null when snap was ended by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
}

export interface RunningSnap {
  child: ChildProcess;
  result: Promise<SnapResult>;
}

const killGraceMs = 5000;
const pipesGraceMs = 2000;

export function startSnap(args: string[], options: SnapRunOptions = {}): RunningSnap {
  return startNodeScript(snapEntry, args, options);
}

export function runSnap(args: string[], options: SnapRunOptions = {}): Promise<SnapResult> {
  return startSnap(args, options).result;
}

/** What startSnap does, for any script: lets the run-and-collect machinery be tested without the CLI. */
export function startNodeScript(script: string, args: string[], options: SnapRunOptions = {}): RunningSnap {
  return startProgram(nodeBin, [script, ...args], options);
}

/** Any program run and collected as snap is (a shell or unshare in front of snap, say). */
export function runProgram(file: string, args: string[], options: SnapRunOptions = {}): Promise<SnapResult> {
  return startProgram(file, args, options).result;
}

function startProgram(file: string, args: string[], options: SnapRunOptions): RunningSnap {
  const { cwd = repoRoot, timeoutMs = 110_000, input } = options;
  // Output goes to pipes, as in CI; colour codes would only get in the way of assertions.
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined };
  Object.assign(env, options.env);
  for (const name of Object.keys(env)) if (env[name] === undefined) delete env[name];

  const started = performance.now();
  const child = spawn(file, args, { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
  child.stdin!.on('error', () => {}); // snap may exit without reading its input
  child.stdin!.end(input);

  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  const timeoutTimer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), killGraceMs);
  }, timeoutMs);

  // A process snap left behind holding its stdout or stderr would keep 'close' from ever coming: after a grace
  // period the pipes are let go, and the note says why the output may be cut short.
  let pipesHeldOpen = false;
  let pipesTimer: NodeJS.Timeout | undefined;
  child.once('exit', () => {
    pipesTimer = setTimeout(() => {
      pipesHeldOpen = true;
      child.stdout!.destroy();
      child.stderr!.destroy();
    }, pipesGraceMs);
  });

  const result = new Promise<SnapResult>((resolve, reject) => {
    child.once('error', (error) => {
      clearTimeout(timeoutTimer);
      reject(new Error(`could not run ${file} ${args.join(' ')}: ${error.message}`));
    });
    // 'close', not 'exit': it comes after stdout and stderr have been read to the end.
    child.once('close', (exitCode, signal) => {
      clearTimeout(timeoutTimer);
      clearTimeout(killTimer);
      clearTimeout(pipesTimer);
      const note = pipesHeldOpen ? `\n[runSnap: snap exited but another process held its output open]\n` : '';
      resolve({
        exitCode,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8') + note,
        durationMs: performance.now() - started,
        timedOut,
      });
    });
  });
  return { child, result };
}

/** Runs snap as the child of a small python3 that reads the peak RSS of its waited-for children from the kernel
 *  (getrusage RUSAGE_CHILDREN, KiB): snap's own peak, measured from outside it. */
export function snapWithPeak(args: string[], env: Record<string, string>): { run: { exitCode: number | null; stderr: string }; peakKiB: number } {
  const wrapper = 'import resource, subprocess, sys\nr = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\nsys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + "\\n" + str(r.returncode) + "\\n")\nsys.stderr.buffer.write(r.stderr)';
  const r = spawnSync('/usr/bin/python3', ['-c', wrapper, nodeBin, snapEntry, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
  const [peak, code] = r.stdout.trim().split('\n');
  return { run: { exitCode: Number(code), stderr: r.stderr }, peakKiB: Number(peak) };
}
