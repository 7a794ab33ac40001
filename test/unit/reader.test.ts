// entryNameProblem: the first guard against a hostile bundle writing outside the extraction directory.
import { describe, expect, it } from 'vitest';
import { entryNameProblem } from '../../src/bundle/reader.js';

describe('entryNameProblem', () => {
  it('accepts the names snap itself writes', () => {
    for (const name of ['manifest.json', 'manifest.sig', 'core.4242', 'criu/pages-1.img', 'criu/core-4242.img', 'logs/criu-dump.log'])
      expect(entryNameProblem(name), name).toBeUndefined();
  });

  it('refuses an absolute path', () => {
    expect(entryNameProblem('/etc/passwd')).toBe('absolute path');
  });

  it('refuses ".." anywhere in the path', () => {
    expect(entryNameProblem('../evil')).toBe("'..' component");
    expect(entryNameProblem('criu/../../evil')).toBe("'..' component");
    expect(entryNameProblem('criu/..')).toBe("'..' component");
  });

  it('refuses empty and "." components', () => {
    expect(entryNameProblem('criu//x.img')).toMatch(/empty/);
    expect(entryNameProblem('./manifest.json')).toMatch(/empty/);
    expect(entryNameProblem('criu/')).toMatch(/empty/);
    expect(entryNameProblem('')).toMatch(/empty/);
  });

  it('refuses unexpected characters (spaces, backslashes, newlines, non-ASCII)', () => {
    for (const name of ['core 1', 'criu\\x', 'a\nb', 'caf\u00e9', 'x;rm'])
      expect(entryNameProblem(name), JSON.stringify(name)).toBe('unexpected characters');
  });

  it('allows ".." inside a name, which is not a parent reference', () => {
    expect(entryNameProblem('criu/a..b.img')).toBeUndefined();
  });
});
