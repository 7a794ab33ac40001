// checkOutputPath: every unusable --output is refused before the target is touched, with an OutputPathError.
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { asOutputError, checkOutputPath, defaultOutputName, filesystemOf, noSpaceCode } from '../../src/bundle/output-path.js';
import { CoreBuildError } from '../../src/corefile/errors.js';
import { EXIT_CODES, InterruptedError, OutputPathError, StepFailedError, StepTimeoutError } from '../../src/errors.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'snap-unit-output-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The OutputPathError checkOutputPath throws (fails the test if it returns or throws something else). */
function refusal(output: string, estimate = 0): OutputPathError {
  try {
    checkOutputPath(output, estimate);
  } catch (error) {
    expect(error).toBeInstanceOf(OutputPathError);
    expect((error as OutputPathError).exitCode).toBe(EXIT_CODES.output.code);
    return error as OutputPathError;
  }
  throw new Error(`checkOutputPath(${output}) accepted it`);
}

describe('checkOutputPath', () => {
  it('accepts a new file in a private directory and returns its absolute path', () => {
    const out = join(dir, 'x.tar.zst');
    expect(checkOutputPath(out, 1024)).toBe(out);
    expect(checkOutputPath(relative(process.cwd(), out), 1024)).toBe(out);
    expect(readdirSync(dir)).toEqual([]); // checking creates nothing
  });

  it('refuses a directory that does not exist', () => {
    expect(refusal(join(dir, 'missing', 'x.tar.zst')).message).toMatch(/does not exist/);
  });

  it('refuses a path whose directory part is a file', () => {
    writeFileSync(join(dir, 'file'), 'x');
    expect(refusal(join(dir, 'file', 'x.tar.zst')).message).toMatch(/is not a directory/);
  });

  it('refuses a world-writable directory without the sticky bit, and accepts one with it', () => {
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    expect(refusal(join(open, 'x.tar.zst')).message).toMatch(/world-writable without the sticky bit/);
    chmodSync(open, 0o1777);
    expect(checkOutputPath(join(open, 'x.tar.zst'), 0)).toBe(join(open, 'x.tar.zst'));
  });

  it('refuses an existing file: snap never overwrites', () => {
    writeFileSync(join(dir, 'x.tar.zst'), 'precious');
    expect(refusal(join(dir, 'x.tar.zst')).message).toMatch(/already exists/);
  });

  it('refuses a symlink at the output path, even a dangling one', () => {
    symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'));
    expect(refusal(join(dir, 'dangling')).message).toMatch(/is a symlink/);
    writeFileSync(join(dir, 'real'), 'x');
    symlinkSync(join(dir, 'real'), join(dir, 'link'));
    expect(refusal(join(dir, 'link')).message).toMatch(/is a symlink/);
  });

  it('refuses when the filesystem has less room than the estimate', () => {
    expect(refusal(join(dir, 'x.tar.zst'), Number.MAX_SAFE_INTEGER).message).toMatch(/not enough room/);
  });
});

describe('defaultOutputName', () => {
  it('names the bundle after a sanitised comm, the pid and a UTC time, with the compression extension', () => {
    const at = new Date('2026-01-02T03:04:05.678Z');
    expect(defaultOutputName('my app/../x', 4242, at, 'zstd')).toBe('snap-my_app_.._x-4242-20260102T030405Z.tar.zst');
    expect(defaultOutputName('', 7, at, 'none')).toBe('snap-process-7-20260102T030405Z.tar');
    expect(defaultOutputName('api', 7, at, 'zstd', true)).toBe('snap-api-7-20260102T030405Z.tar.zst.age');
  });
});

describe('filesystemOf', () => {
  it('names the mount point and type a path is on, the innermost mount winning', () => {
    expect(filesystemOf('/proc/self')).toBe('/proc (proc)');
    expect(filesystemOf('/proc/sys/kernel')).toMatch(/^\/proc(\/sys)? \(\w+\)$/);
    expect(filesystemOf('/')).toMatch(/^\/ \(\w+\)$/);
    expect(filesystemOf('/no/such/path')).toBe('unknown filesystem');
  });
});

/** An errno error as Node's fs functions throw it. */
function errno(code: string, message: string, path?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${message}`), { code, ...(path ? { path } : {}) });
}

describe('asOutputError: a write that failed because of where the output goes', () => {
  it('ENOSPC, from the error or the errors it wraps, names the step, the directory and its filesystem (exit 7)', () => {
    const direct = asOutputError(errno('ENOSPC', 'no space left on device, write'), dir, 'writing the cores');
    expect(direct).toBeInstanceOf(OutputPathError);
    expect((direct as OutputPathError).exitCode).toBe(7);
    expect((direct as OutputPathError).message).toBe(`no space left while writing the cores in ${dir}, on the filesystem mounted at ${filesystemOf(dir)}`);
    // writeCoreFromImages wraps the write's error in a CoreBuildError (exit 8): the full disk is still the story.
    const wrapped = new CoreBuildError('ENOSPC: no space left on device, write', { cause: errno('ENOSPC', 'no space left on device, write') });
    expect((asOutputError(wrapped, dir, 'writing the cores') as OutputPathError).kind).toBe('output');
    // zstd's stderr, or a tool's message, with no errno code.
    expect(noSpaceCode(new StepFailedError('gdb did not write a core (exit 1): No space left on device'))).toBe('ENOSPC');
  });

  it('EDQUOT says the quota', () => {
    const e = asOutputError(errno('EDQUOT', 'disk quota exceeded, write'), dir, 'writing the bundle') as OutputPathError;
    expect(e.message).toMatch(new RegExp(`^disk quota exceeded while writing the bundle in ${dir}, on the filesystem mounted at `));
    expect(e.hint).toMatch(/quota/);
  });

  it('a full disk elsewhere (a file outside the output directory) is named by its own directory', () => {
    const e = asOutputError(errno('ENOSPC', 'no space left on device, open', '/run/snap/target-1.json'), dir, 'writing the bundle') as OutputPathError;
    expect(e.message).toContain('in /run/snap, on the filesystem mounted at ');
  });

  it('the output directory or the work directory removed: exit 7 naming it, whatever error the write met', () => {
    const out = join(dir, 'out');
    mkdirSync(out);
    const work = join(out, '.x.work-1-abc');
    mkdirSync(work);
    const enoent = errno('ENOENT', 'no such file or directory, open', join(work, 'core.1'));
    expect(asOutputError(enoent, out, 'writing the cores', work)).toBe(enoent); // both still there: not the output's
    rmSync(work, { recursive: true });
    expect((asOutputError(enoent, out, 'writing the cores', work) as OutputPathError).message).toBe(
      `the work directory ${work} was removed while writing the cores, from ${out} on the filesystem mounted at ${filesystemOf(out)}`,
    );
    rmSync(out, { recursive: true });
    const criu = new StepFailedError('criu dump failed (exit 1, images incomplete): no error lines');
    const gone = asOutputError(criu, out, 'writing the CRIU images', work) as OutputPathError;
    expect(gone).toBeInstanceOf(OutputPathError);
    expect(gone.message).toBe(`output directory ${out} was removed while writing the CRIU images (it was on the filesystem mounted at ${filesystemOf(dir)})`);
  });

  it("leaves alone what is not the output's fault, and a failure that tells its own story", () => {
    const other = errno('EIO', 'i/o error, read');
    expect(asOutputError(other, dir, 'writing the bundle')).toBe(other);
    const timeout = new StepTimeoutError('the core dump (gdb) did not finish in time; it was killed');
    expect(asOutputError(timeout, join(dir, 'gone'), 'writing the cores')).toBe(timeout);
    const interrupted = new InterruptedError('SIGINT', 'the seal');
    expect(asOutputError(interrupted, join(dir, 'gone'), 'writing the bundle')).toBe(interrupted);
  });
});
