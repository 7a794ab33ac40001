// Small python programs started in sessions of their own, named by a marker on their command line, for the tests of
// targets by name and of watch: a sleeper (optionally with a forked worker), killed by pid when the file ends.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { processExists, readProcStat, waitFor } from './target.js';

export const python3 = '/usr/bin/python3';

const started = new Set<number>();

/** A python program run as `python3 -c CODE MARKER ARGS...`, its own session; resolves once /proc shows it. */
export async function startPython(code: string, marker: string, args: string[] = []): Promise<number> {
  const child = spawn(python3, ['-c', code, marker, ...args], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid!;
  started.add(pid);
  await waitFor(() => readProcStat(pid)?.comm === 'python3' && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker), { what: `python ${marker} to start` });
  return pid;
}

/** A python script run as `python3 SCRIPT MARKER ARGS...`, its own session. */
export async function startScript(script: string, marker: string, args: string[] = []): Promise<number> {
  const child = spawn(python3, [script, marker, ...args], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid!;
  started.add(pid);
  await waitFor(() => readProcStat(pid)?.comm === 'python3', { what: `python ${script} to start` });
  return pid;
}

/** A process that sleeps; with workers, it forks that many children that sleep too (its workers, same command line). */
export async function startSleeper(marker: string, workers = 0): Promise<{ pid: number; workers: number[] }> {
  const code = [
    'import os, sys, time',
    `kids = []`,
    `for _ in range(${workers}):`,
    '    p = os.fork()',
    '    if p == 0:',
    '        while True: time.sleep(1)',
    '    kids.append(p)',
    'while True: time.sleep(1)',
  ].join('\n');
  const pid = await startPython(code, marker);
  const kids = await waitFor(
    () => {
      const text = readChildren(pid);
      return text.length === workers ? text : undefined;
    },
    { what: `${workers} workers of ${pid}` },
  );
  for (const k of kids) started.add(k);
  return { pid, workers: kids };
}

export function readChildren(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The one-letter state of the process (undefined once gone). */
export function stateOf(pid: number): string | undefined {
  return readProcStat(pid)?.state;
}

/** SIGKILL each process this file started (by pid, children first), and wait until each is gone. */
export async function killStarted(): Promise<void> {
  for (const pid of [...started].reverse()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const pid of started) await waitFor(() => !processExists(pid) || readProcStat(pid)?.state === 'Z', { what: `process ${pid} to die`, timeoutMs: 10_000 });
  started.clear();
}
