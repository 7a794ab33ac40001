// gdb's index kept between runs: in snap's own private cache directory only, bounded, and only for files no one but
// root could have written (gdb keys an index by build id alone).
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { onlyRootCouldWrite, sharedGdbIndexDir } from '../../src/tools/gdb-index-cache.js';

const base = mkdtempSync(join(tmpdir(), 'snap-gdb-index-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('sharedGdbIndexDir', () => {
  it('makes gdb-index, private, under the cache directory, and gives it', () => {
    const cache = join(base, 'fresh');
    expect(sharedGdbIndexDir(cache)).toBe(join(cache, 'gdb-index'));
    expect(readdirSync(cache)).toEqual(['gdb-index']);
  });

  it('gives none when the directory is open to others, or is a link', () => {
    const open = join(base, 'open');
    mkdirSync(join(open, 'gdb-index'), { recursive: true });
    chmodSync(join(open, 'gdb-index'), 0o777);
    expect(sharedGdbIndexDir(open)).toBeUndefined();
    const linked = join(base, 'linked');
    mkdirSync(linked);
    mkdirSync(join(base, 'elsewhere'), { mode: 0o700 });
    symlinkSync(join(base, 'elsewhere'), join(linked, 'gdb-index'));
    expect(sharedGdbIndexDir(linked)).toBeUndefined();
  });

  it('past its bound, the oldest indexes go until a quarter of it is free', () => {
    const cache = join(base, 'full');
    const dir = sharedGdbIndexDir(cache)!;
    // Five of 300 bytes, the first the oldest: 1500 bytes against a bound of 1000 leaves the newest two (600 <= 750).
    for (let i = 0; i < 5; i++) {
      writeFileSync(join(dir, `${i}.gdb-index`), Buffer.alloc(300));
      utimesSync(join(dir, `${i}.gdb-index`), 1000 + i, 1000 + i);
    }
    expect(sharedGdbIndexDir(cache, 1000)).toBe(dir);
    expect(readdirSync(dir).sort()).toEqual(['3.gdb-index', '4.gdb-index']);
    expect(sharedGdbIndexDir(cache, 1000)).toBe(dir);
    expect(readdirSync(dir)).toHaveLength(2);
  });
});

describe('onlyRootCouldWrite', () => {
  it("programs of the system: yes (root's, written by no one else, in root's directories)", () => {
    expect(onlyRootCouldWrite(['/usr/bin/env', '/usr/bin/sh'])).toBe(true);
  });

  it('a root file in a directory anyone may write, a file others may write, a deleted or missing file, a relative path: no', () => {
    const dir = join(base, 'anyone');
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    writeFileSync(join(dir, 'prog'), 'x', { mode: 0o755 });
    expect(onlyRootCouldWrite(['/usr/bin/env', join(dir, 'prog')])).toBe(false);
    // A file others may write, its directories taken as root's (the memo the function is given says so).
    const own = join(base, 'own');
    mkdirSync(own, { mode: 0o755 });
    writeFileSync(join(own, 'prog'), 'x');
    chmodSync(join(own, 'prog'), 0o666);
    const dirs = (p: string) => new Map(p.split('/').slice(1, -1).map((_, i, parts) => ['/' + parts.slice(0, i + 1).join('/'), true] as [string, boolean]));
    expect(onlyRootCouldWrite([join(own, 'prog')], dirs(join(own, 'prog')))).toBe(false);
    chmodSync(join(own, 'prog'), 0o644);
    expect(onlyRootCouldWrite([join(own, 'prog')], dirs(join(own, 'prog')))).toBe(true);
    expect(onlyRootCouldWrite(['/usr/bin/env (deleted)'])).toBe(false);
    expect(onlyRootCouldWrite(['/usr/bin/no-such-program-here'])).toBe(false);
    expect(onlyRootCouldWrite(['usr/bin/env'])).toBe(false);
  });
});
