// parseStat: /proc/PID/stat lines whose comm holds spaces and parentheses, which a naive split gets wrong.
import { describe, expect, it } from 'vitest';
import { parseStat } from '../../src/process/proc.js';

/** A stat line with every field up to 22 (start time); fields 8-19 and 21 are filler. */
function statLine(pid: number, comm: string, state: string, opts: { ppid?: number; threads?: number; start?: number } = {}): string {
  const { ppid = 1, threads = 1, start = 4242 } = opts;
  const fields = [state, ppid, pid, pid, 34817, -1, 4194560, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, threads, 0, start, 12345678, 300];
  return `${pid} (${comm}) ${fields.join(' ')}\n`;
}

describe('parseStat', () => {
  it('reads every field of a plain stat line', () => {
    expect(parseStat(statLine(4242, 'worker', 'S', { ppid: 7, threads: 4, start: 987654 }))).toEqual({
      pid: 4242,
      comm: 'worker',
      state: 'S',
      ppid: 7,
      pgrp: 4242,
      session: 4242,
      ttyNr: 34817,
      numThreads: 4,
      startTime: 987654,
    });
  });

  it('keeps spaces inside comm and still finds the state after it', () => {
    const s = parseStat(statLine(10, 'tmux: server', 'T', { threads: 2 }));
    expect(s.comm).toBe('tmux: server');
    expect(s.state).toBe('T');
    expect(s.numThreads).toBe(2);
  });

  it('splits on the last ")" when comm itself holds ")" and " R ("', () => {
    const s = parseStat(statLine(77, 'a) R (b) c', 'T', { ppid: 5, threads: 3, start: 111 }));
    expect(s.comm).toBe('a) R (b) c');
    expect(s.state).toBe('T');
    expect(s.ppid).toBe(5);
    expect(s.numThreads).toBe(3);
    expect(s.startTime).toBe(111);
  });

  it('accepts a comm that is only ")" characters or empty', () => {
    expect(parseStat(statLine(8, '))', 'R')).comm).toBe('))');
    expect(parseStat(statLine(9, '', 'Z')).state).toBe('Z');
  });

  it('throws on a line that is not a stat line', () => {
    expect(() => parseStat('not a stat line')).toThrow(/unparseable/);
  });

  it("parses this test process's own stat line", async () => {
    const { readFileSync } = await import('node:fs');
    const s = parseStat(readFileSync('/proc/self/stat', 'utf8'));
    expect(s.pid).toBe(process.pid);
    expect(s.state).toBe('R');
    expect(s.startTime).toBeGreaterThan(0);
  });
});
