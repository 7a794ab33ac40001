// checkOutputPath: every unusable --output is refused before the target is touched, with an OutputPathError.
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkOutputPath, defaultOutputName, filesystemOf } from '../../src/bundle/output-path.js';
import { EXIT_CODES, OutputPathError } from '../../src/errors.js';

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
