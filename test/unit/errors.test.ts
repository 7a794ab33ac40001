// The exit codes are a documented interface: each must name one kind of failure, and each error class must use its own.
import { describe, expect, it } from 'vitest';
import {
  BundleInvalidError, EXIT_CODES, InternalError, InterruptedError, LockedError, OutputPathError, PermissionDeniedError, RestoreFailedError,
  RestoreRefusedError, RollbackIncompleteError, SnapError, StepFailedError, StepTimeoutError, TargetChangedError,
  TargetNotFoundError, TargetRefusedError, ToolError, UploadFailedError, UsageError, isSnapError,
} from '../../src/errors.js';

describe('EXIT_CODES', () => {
  it('gives every kind of failure its own exit code', () => {
    const codes = Object.values(EXIT_CODES).map((e) => e.code);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('uses no code that means something else to a shell (0 success, 1 generic, 126-128 exec) and stays below 256', () => {
    for (const [kind, { code }] of Object.entries(EXIT_CODES)) {
      expect(code, kind).toBeGreaterThanOrEqual(2);
      expect(code, kind).toBeLessThan(256);
      expect([126, 127, 128], kind).not.toContain(code);
    }
  });

  it('uses 128 + signal number for the interrupted kinds, as shells do', () => {
    expect(EXIT_CODES.interruptedHup.code).toBe(128 + 1);
    expect(EXIT_CODES.interruptedInt.code).toBe(128 + 2);
    expect(EXIT_CODES.interruptedTerm.code).toBe(128 + 15);
  });

  it('documents a meaning for every code', () => {
    for (const [kind, { meaning }] of Object.entries(EXIT_CODES)) expect(meaning.length, kind).toBeGreaterThan(10);
  });
});

describe('error classes', () => {
  const cases: [SnapError, keyof typeof EXIT_CODES][] = [
    [new UsageError('x'), 'usage'],
    [new TargetNotFoundError(42), 'targetNotFound'],
    [new TargetRefusedError('x'), 'targetRefused'],
    [new PermissionDeniedError('x'), 'permission'],
    [new ToolError('x'), 'toolMissing'],
    [new OutputPathError('x'), 'output'],
    [new StepFailedError('x'), 'stepFailed'],
    [new TargetChangedError('x'), 'targetChanged'],
    [new StepTimeoutError('x'), 'timeout'],
    [new BundleInvalidError('x'), 'bundleInvalid'],
    [new RestoreRefusedError('x'), 'restoreRefused'],
    [new RestoreFailedError('x'), 'restoreFailed'],
    [new LockedError('x'), 'locked'],
    [new RollbackIncompleteError('x'), 'rollbackIncomplete'],
    [new UploadFailedError('x'), 'uploadFailed'],
    [new InternalError(new Error('x')), 'internal'],
    [new InterruptedError('SIGHUP', 'x'), 'interruptedHup'],
    [new InterruptedError('SIGINT', 'x'), 'interruptedInt'],
    [new InterruptedError('SIGTERM', 'x'), 'interruptedTerm'],
  ];

  it('covers every kind in EXIT_CODES with exactly one class', () => {
    expect(cases.map(([, kind]) => kind).sort()).toEqual(Object.keys(EXIT_CODES).sort());
  });

  it.each(cases.map(([e, kind]) => [e.name, kind, e] as const))('%s exits with the code of %s', (_name, kind, error) => {
    expect(error.kind).toBe(kind);
    expect(error.exitCode).toBe(EXIT_CODES[kind].code);
    expect(isSnapError(error)).toBe(true);
  });

  it('puts the hint after the message on one line', () => {
    const e = new OutputPathError('output /x already exists', 'choose another --output');
    expect(e.oneLine()).toBe('output /x already exists; choose another --output');
    expect(e.oneLine()).not.toContain('\n');
    expect(new UsageError('bad pid').oneLine()).toBe('bad pid');
  });
});
