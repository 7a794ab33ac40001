// A process of the tree that another tracer holds (a debugger, strace) is refused before any signal: a traced task
// stops for its tracer, not for SIGSTOP, so snap could neither verify its stop nor put it back. Before this refusal
// snap sent SIGSTOP, waited for a group stop that never came and rolled back, and the task was left changed.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, processExists, readProcStat, waitFor } from '../helpers/target.js';

const started: number[] = [];
afterAll(async () => {
  for (const pid of started.reverse()) if (processExists(pid)) await killPid(pid);
  removeTempDirs();
});

const tracerOf = (pid: number): number => Number(/^TracerPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const childOf = (pid: number): number | undefined =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)[0];

describe('a tree with a process that strace is tracing', () => {
  it('is refused with exit 4 naming that process and its tracer, before any signal: both processes as they were', async () => {
    const dir = makeTempDir('snap-traced-');
    const root = spawn('/bin/sh', ['-c', 'sleep 1000 & wait'], { detached: true, stdio: 'ignore' });
    started.push(root.pid!);
    const child = await waitFor(() => childOf(root.pid!), { what: 'sh to start sleep' });
    started.push(child);
    const strace = spawn('strace', ['-p', String(child), '-o', '/dev/null'], { detached: true, stdio: 'ignore' });
    started.push(strace.pid!);
    await waitFor(() => tracerOf(child) === strace.pid, { what: 'strace to attach to sleep' });
    const bundle = join(dir, 'b.tar.zst');
    const run = await runSnap(['dump', String(root.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(run.exitCode, run.stderr).toBe(4);
    expect(run.stderr).toContain(`process ${child} (sleep)`);
    expect(run.stderr).toContain(`traced by pid ${strace.pid} (strace)`);
    expect(run.stderr).not.toContain('[start] Stop every process of the tree with SIGSTOP');
    expect(existsSync(bundle)).toBe(false);
    // Untouched: the shell still waiting, sleep still asleep under its tracer.
    expect(readProcStat(root.pid!)?.state).toBe('S');
    expect(readProcStat(child)?.state).toBe('S');
    expect(tracerOf(child)).toBe(strace.pid);
  });
});
