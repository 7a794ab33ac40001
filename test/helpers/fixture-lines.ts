// Where the stack fixtures block: each marks the line a function waits on with a comment "NAME blocks here", so that
// a test asserts the line an unwinder must find without hard-coding it.
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';

/** The 1-based line of `file` whose comment says "`fn` blocks here". */
export function markedLine(file: string, fn: string): number {
  const line = readFileSync(file, 'utf8').split('\n').findIndex((l) => /(\/\/|#) /.test(l) && l.includes(`${fn} blocks here`)) + 1;
  expect(line, `${fn}'s marked line in ${file}`).toBeGreaterThan(0);
  return line;
}
