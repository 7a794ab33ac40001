// Node's compiled modules kept between runs: only in a private directory of snap's user under ancestors nobody else
// can change, since what it holds is code Node runs (as root, for a dump); anywhere else snap runs without it.
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { onlyOwnerCouldWrite } from '../../src/tools/compile-cache.js';
import { runSnap } from '../helpers/cli.js';

const base = mkdtempSync(join(tmpdir(), 'snap-compile-cache-'));
chmodSync(base, 0o755);
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** `parent/leaf`, parent with `parentMode`, leaf private. */
function dirUnder(name: string, parentMode: number): string {
  const parent = join(base, name);
  mkdirSync(join(parent, 'leaf'), { recursive: true, mode: 0o700 });
  chmodSync(parent, parentMode);
  chmodSync(join(parent, 'leaf'), 0o700);
  return join(parent, 'leaf');
}

const files = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String) : []);

describe('onlyOwnerCouldWrite', () => {
  it('takes a private directory under ancestors only its owner or root can change, a sticky one among them', () => {
    expect(onlyOwnerCouldWrite(dirUnder('plain', 0o755))).toBe(true);
    expect(onlyOwnerCouldWrite(dirUnder('sticky', 0o1777))).toBe(true);
  });

  it('refuses a directory open to its group, an ancestor others may write, or one owned by another user', () => {
    const grouped = dirUnder('grouped', 0o755);
    chmodSync(grouped, 0o770);
    expect(onlyOwnerCouldWrite(grouped)).toBe(false);
    expect(onlyOwnerCouldWrite(dirUnder('open', 0o777))).toBe(false);
    expect(onlyOwnerCouldWrite(dirUnder('group-writable', 0o775))).toBe(false);
    const others = dirUnder('others', 0o755);
    chownSync(join(base, 'others'), 65534, 65534);
    expect(onlyOwnerCouldWrite(others)).toBe(process.getuid?.() === 65534);
  });
});

describe('the CLI', () => {
  it('keeps its compiled modules in node-compile under a safe cache directory, and none under an unsafe one', async () => {
    const safe = dirUnder('cli-safe', 0o755);
    const unsafe = dirUnder('cli-unsafe', 0o777);
    const env = (cache: string) => ({ env: { PROCSNAP_CACHE_DIR: cache, NODE_DISABLE_COMPILE_CACHE: undefined } });
    expect((await runSnap(['dump'], env(safe))).exitCode).toBe(2);
    expect((await runSnap(['dump'], env(unsafe))).exitCode).toBe(2);
    expect(files(join(safe, 'node-compile')).length).toBeGreaterThan(10);
    expect(files(join(unsafe, 'node-compile'))).toEqual([]);
  });
});
