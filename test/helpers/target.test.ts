// Proves the worker fixture and the target helpers behave as the e2e tests and the benchmark assume.
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  cleanupAllTargets,
  parseProcStat,
  parseProgressRecord,
  PROGRESS_RECORD_BYTES,
  processExists,
  readProcStat,
  startTarget,
  waitFor,
  type Target,
} from './target.js';

afterEach(cleanupAllTargets);

/** The anonymous read-write mapping of about `mib` MiB: the worker's buffer. */
function bufferMapping(pid: number, mib: number): { start: number; end: number } {
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const [range, perms, , , inode, path] = line.split(/\s+/);
    if (!range || perms !== 'rw-p' || inode !== '0' || path) continue;
    const [start, end] = range.split('-').map((hex) => parseInt(hex, 16)) as [number, number];
    if (end - start >= mib << 20) return { start, end };
  }
  throw new Error(`no ${mib} MiB anonymous mapping in /proc/${pid}/maps`);
}

function readMemory(pid: number, address: number, bytes: number): Buffer {
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    const buffer = Buffer.alloc(bytes);
    // /proc/PID/mem may return less than asked for; an unread tail would look like zero pages.
    let done = 0;
    while (done < bytes) {
      const n = readSync(fd, buffer, done, bytes - done, address + done);
      if (n === 0) throw new Error(`/proc/${pid}/mem ended at ${done} of ${bytes} bytes`);
      done += n;
    }
    return buffer;
  } finally {
    closeSync(fd);
  }
}

async function ticksOver(target: Target, ms: number): Promise<{ before: number; after: number }> {
  const before = target.readProgress().ticks;
  await sleep(ms);
  return { before, after: target.readProgress().ticks };
}

describe('worker fixture and target helpers', () => {
  it('a 4-thread setsid target has 4 tasks and leads its own session', async () => {
    const target = await startTarget({ threads: 4, mib: 8, group: 'setsid' });
    expect(target.threadStates()).toHaveLength(4);
    const stat = target.stat()!;
    expect(stat.session).toBe(target.pid);
    expect(stat.pgrp).toBe(target.pid);
    expect(stat.numThreads).toBe(4);
    const progress = await target.waitUntilTicksAdvance(5);
    expect(progress.pid).toBe(target.pid);
    expect(progress.threads).toBe(4);
    expect(progress.counters).toHaveLength(3);
    expect(Math.min(...progress.counters)).toBeGreaterThan(0);
  });

  it('an own-pgrp target is really paused by SIGTSTP, and SIGCONT resumes it', async () => {
    const target = await startTarget({ threads: 3, mib: 4, group: 'own-pgrp' });
    const stat = target.stat()!;
    expect(stat.pgrp).toBe(target.pid);
    expect(stat.session).toBe(readProcStat(process.pid)!.session);

    await target.pauseWith('SIGTSTP');
    expect(target.threadStates()).toEqual(['T', 'T', 'T']);
    const countersBefore = target.readProgress().counters;
    const { before, after } = await ticksOver(target, 300);
    expect(after).toBe(before);
    expect(target.readProgress().counters).toEqual(countersBefore);

    await target.resume();
    await target.waitUntilTicksAdvance(10);
  });

  it('a setsid target is not paused by SIGTSTP: its process group is orphaned', async () => {
    const target = await startTarget({ threads: 2, mib: 4, group: 'setsid' });
    await expect(target.pauseWith('SIGTSTP', { timeoutMs: 500 })).rejects.toThrow(/orphaned/);
    const { before, after } = await ticksOver(target, 300);
    expect(after - before).toBeGreaterThan(10);
    expect(target.processState()).not.toBe('T');
  });

  it('SIGSTOP pauses a setsid target', async () => {
    const target = await startTarget({ threads: 2, mib: 4, group: 'setsid' });
    await target.pauseWith('SIGSTOP');
    const { before, after } = await ticksOver(target, 300);
    expect(after).toBe(before);
    await target.resume();
    await target.waitUntilTicksAdvance(5);
  });

  it('the max gap records a freeze, and SIGUSR1 resets it', async () => {
    const target = await startTarget({ threads: 2, mib: 4, group: 'setsid' });
    await target.pauseWith('SIGSTOP');
    await sleep(400);
    await target.resume();
    const afterFreeze = await target.waitUntilTicksAdvance(2);
    expect(afterFreeze.maxGapUs).toBeGreaterThanOrEqual(400_000);

    const afterReset = await target.resetMaxGap();
    expect(afterReset.resets).toBe(afterFreeze.resets + 1);
    expect(afterReset.maxGapUs).toBeLessThan(200_000);
  });

  it('the progress file stays exactly 256 bytes through pauses, resets and exit', async () => {
    const target = await startTarget({ threads: 4, mib: 4, tickMs: 1, group: 'own-pgrp' });
    const sizes = new Set<number>();
    const sample = async (times: number): Promise<void> => {
      for (let i = 0; i < times; i++) {
        sizes.add(statSync(target.progressPath).size);
        await sleep(2);
      }
    };
    await sample(50);
    await target.pauseWith('SIGTSTP');
    await sample(10);
    await target.resume();
    await target.resetMaxGap();
    await sample(50);
    target.signal('SIGTERM');
    await waitFor(() => target.childExit, { what: 'the worker to exit after SIGTERM' });
    expect(target.childExit).toEqual({ code: 0, signal: null });
    sizes.add(statSync(target.progressPath).size);
    expect([...sizes]).toEqual([PROGRESS_RECORD_BYTES]);
  });

  it('fills its buffer with non-zero pages, and --dirty-kib keeps rewriting them', async () => {
    const target = await startTarget({ threads: 2, mib: 16, dirtyKib: 64, group: 'setsid' });
    const { start, end } = bufferMapping(target.pid, 16);
    const memory = readMemory(target.pid, start, end - start);
    let zeroPages = 0;
    for (let page = 0; page < memory.length; page += 4096) {
      if (memory.subarray(page, page + 4096).every((byte) => byte === 0)) zeroPages++;
    }
    // The kernel may merge an adjacent anonymous mapping of the same kind into the buffer's, so only the mapping's
    // excess over the buffer may hold zero pages. (One run here found one zero page; whether that was such a merge
    // or a short read of /proc/PID/mem, now read to the end, was not seen.)
    const excessPages = (end - start - (16 << 20)) / 4096;
    expect(zeroPages, `${zeroPages} zero pages in a mapping of ${(end - start) / 4096} pages`).toBeLessThanOrEqual(excessPages);

    await target.waitUntilTicksAdvance(20);
    const later = readMemory(target.pid, start, end - start);
    let rewrittenPages = 0;
    for (let page = 0; page < memory.length; page += 4096) {
      if (!later.subarray(page, page + 4096).equals(memory.subarray(page, page + 4096))) rewrittenPages++;
    }
    expect(rewrittenPages).toBeGreaterThanOrEqual(16); // 64 KiB a tick, 20 ticks or more
  });

  it('kill() frees the PID, for a later restore to take', async () => {
    const target = await startTarget({ threads: 2, mib: 4, group: 'setsid' });
    await target.pauseWith('SIGSTOP');
    await target.kill();
    expect(processExists(target.pid)).toBe(false);
    expect(target.childExit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(target.isAlive()).toBe(false);
  });

  it('reads the state after the last ")" of a stat line, whatever the name holds', () => {
    const stat = parseProcStat('4242 (a) R (b) c) T 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 987654 0');
    expect(stat.comm).toBe('a) R (b) c');
    expect(stat.state).toBe('T');
    expect(stat.ppid).toBe(1);
    expect(stat.numThreads).toBe(3);
    expect(stat.startTime).toBe(987654);
  });

  it('parses progress records with no counters and with counters cut short', () => {
    const record = (counters: string): string =>
      (
        'ticks=00000000000000000034 maxgap_us=000000013568 lastgap_us=000000010146 resets=000002 pid=0000010026 ' +
        `threads=064 counters=${counters}`
      ).padEnd(PROGRESS_RECORD_BYTES - 1) + '\n';
    expect(parseProgressRecord(record(''))).toMatchObject({ ticks: 34, resets: 2, counters: [], countersTruncated: false });
    expect(parseProgressRecord(record('35,36,...'))).toMatchObject({ counters: [35, 36], countersTruncated: true });
    expect(parseProgressRecord(record('35,36').slice(0, 200))).toBeUndefined(); // a torn or short read
  });
});
