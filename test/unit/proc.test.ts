// parseStat: /proc/PID/stat lines whose comm holds spaces and parentheses, which a naive split gets wrong. And how a
// failed /proc read is told apart: the process gone (nothing to read) from a file hidden (a refusal naming it).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES, ProcUnreadableError, TargetRefusedError } from '../../src/errors.js';
import { isGoneError, listProcDir, parseStat, procRead, readProcLink, readProcText, readStat, readStatStrict } from '../../src/process/proc.js';

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

/** An error as Node's fs functions throw it: code, errno and the message format "CODE: reason, syscall 'path'". */
function fsError(code: string, reason: string, path: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: ${reason}, open '${path}'`);
  e.code = code;
  e.syscall = 'open';
  e.path = path;
  return e;
}

const failing = (e: unknown) => () => {
  throw e;
};

describe('procRead: which failed reads mean "gone"', () => {
  it.each([
    ['ENOENT', 'no such file or directory'],
    ['ESRCH', 'no such process'],
  ])('%s (the process or thread is gone) answers nothing', (code, reason) => {
    const path = '/proc/4242/fd';
    expect(isGoneError(fsError(code, reason, path))).toBe(true);
    expect(procRead(path, failing(fsError(code, reason, path)))).toBeUndefined();
  });

  it.each([
    ['EACCES', 'permission denied'],
    ['EPERM', 'operation not permitted'],
    ['EIO', 'i/o error'],
    ['ENOTDIR', 'not a directory'],
    ['EISDIR', 'illegal operation on a directory'],
  ])('%s is a refusal (exit 4) naming the file, the code and the reason', (code, reason) => {
    const path = '/proc/1234/fd';
    expect(isGoneError(fsError(code, reason, path))).toBe(false);
    let thrown: unknown;
    try {
      procRead(path, failing(fsError(code, reason, path)));
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ProcUnreadableError);
    expect(thrown).toBeInstanceOf(TargetRefusedError);
    const e = thrown as ProcUnreadableError;
    expect(e.path).toBe(path);
    expect(e.code).toBe(code);
    expect(e.exitCode).toBe(EXIT_CODES.targetRefused.code);
    expect(e.oneLine()).toBe(
      `cannot read ${path}: ${code} (${reason}); snap refuses a tree it cannot see whole; check hidepid/LSM settings and mounts over /proc`,
    );
  });

  it('passes on an error without an errno unchanged: a bug is not a hidden file', () => {
    const bug = new TypeError('not a function');
    expect(() => procRead('/proc/1/stat', failing(bug))).toThrow(bug);
  });

  it('returns what the read returned when it succeeds', () => {
    expect(procRead('/proc/self/stat', () => 'text')).toBe('text');
  });
});

describe('the /proc readers against real files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'snap-test-proc-'));
  const file = join(dir, 'plain');
  writeFileSync(file, 'x');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a missing path is nothing, for a file, a directory and a link', () => {
    expect(readProcText(join(dir, 'missing'))).toBeUndefined();
    expect(listProcDir(join(dir, 'missing'))).toBeUndefined();
    expect(readProcLink(join(dir, 'missing'))).toBeUndefined();
  });

  it('a directory read as a file is EISDIR, naming the path (a directory bound over a /proc file)', () => {
    expect(() => readProcText(dir)).toThrow(ProcUnreadableError);
    expect(() => readProcText(dir)).toThrow(`cannot read ${dir}: EISDIR`);
  });

  it('a file listed as a directory is ENOTDIR, naming the path (a file bound over a /proc directory)', () => {
    expect(() => listProcDir(file)).toThrow(`cannot read ${file}: ENOTDIR (not a directory)`);
  });

  it('a file that is not a link is EINVAL, naming the path', () => {
    expect(() => readProcLink(file)).toThrow(`cannot read ${file}: EINVAL`);
  });

  it('readStat stays quiet for the rollback; readStatStrict answers nothing only for a process that is gone', () => {
    expect(readStatStrict(process.pid)?.pid).toBe(process.pid);
    expect(readStat(process.pid)?.pid).toBe(process.pid);
    // Beyond pid_max: no such process.
    const absent = Number(readProcText('/proc/sys/kernel/pid_max')!.trim()) + 1;
    expect(readStatStrict(absent)).toBeUndefined();
    expect(readStat(absent)).toBeUndefined();
    // A thread id that is not one of this process's threads: its task entry does not exist.
    expect(readStatStrict(process.pid, absent)).toBeUndefined();
  });
});
