// `criu check` once per criu binary, kernel and boot: a pass is remembered in the cache directory and reused while its
// key holds; a failure, a changed binary, a cache that cannot be trusted or one too old means criu check runs again.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CHECK_CACHE_FILE, CHECK_REMEMBERED_MS, criuCheckKey, criuCheckOnce, readRememberedCheck, rememberCheck, type CriuCheckKey,
} from '../../src/tools/criu.js';

let dir: string;
let cache: string;
let runs: string;
let criu: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'snap-unit-criu-check-'));
  // A directory of this user's, 0700, as the journal directory is.
  cache = join(dir, 'journals');
  mkdirSync(cache, { mode: 0o700 });
  runs = join(dir, 'runs');
  writeFileSync(runs, '');
  criu = join(dir, 'criu');
  fakeCriu(0);
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A criu that counts its `check` runs in `runs` and exits with `code`. */
function fakeCriu(code: number): void {
  writeFileSync(criu, `#!/bin/sh\necho check >> '${runs}'\necho 'Looks good.'\nexit ${code}\n`, { mode: 0o755 });
}
const checkRuns = (): number => readFileSync(runs, 'utf8').split('\n').filter(Boolean).length;
const info = (): { path: string; version: string } => ({ path: criu, version: '4.2.1' });

describe('criu check, remembered', () => {
  it('runs once: the second dump on the same binary, kernel and boot reuses the pass', async () => {
    const first = await criuCheckOnce(info(), cache);
    expect(first.ok).toBe(true);
    expect(first.rememberedFrom).toBeUndefined();
    const second = await criuCheckOnce(info(), cache);
    expect(second.ok).toBe(true);
    expect(second.rememberedFrom).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(checkRuns()).toBe(1);
    // The cache is this user's alone.
    expect(statSync(join(cache, CHECK_CACHE_FILE)).mode & 0o777).toBe(0o600);
  });

  it('runs again when the binary changes (its size or its modification time), or for another version', async () => {
    await criuCheckOnce(info(), cache);
    utimesSync(criu, new Date(), new Date(Date.now() + 5000));
    await criuCheckOnce(info(), cache);
    expect(checkRuns()).toBe(2);
    writeFileSync(criu, readFileSync(criu, 'utf8') + '# rebuilt\n');
    await criuCheckOnce(info(), cache);
    expect(checkRuns()).toBe(3);
    await criuCheckOnce({ path: criu, version: '4.3' }, cache);
    expect(checkRuns()).toBe(4);
    await criuCheckOnce({ path: criu, version: '4.3' }, cache);
    expect(checkRuns()).toBe(4);
  });

  it('never remembers a failure: what was missing may be fixed before the next run', async () => {
    fakeCriu(1);
    expect((await criuCheckOnce(info(), cache)).ok).toBe(false);
    expect((await criuCheckOnce(info(), cache)).ok).toBe(false);
    expect(checkRuns()).toBe(2);
  });

  it('runs every time without a cache directory, or where the cache cannot be written', async () => {
    await criuCheckOnce(info(), undefined);
    await criuCheckOnce(info(), undefined);
    // Beneath a regular file: no directory can be made there.
    writeFileSync(join(dir, 'a-file'), '');
    const unwritable = join(dir, 'a-file', 'cache');
    await criuCheckOnce(info(), unwritable);
    await criuCheckOnce(info(), unwritable);
    expect(checkRuns()).toBe(4);
  });

  it('makes its cache directory when it is missing, private', async () => {
    const fresh = join(dir, 'made', 'cache');
    await criuCheckOnce(info(), fresh);
    await criuCheckOnce(info(), fresh);
    expect(checkRuns()).toBe(1);
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
  });
});

describe('the remembered check is read only when it can be trusted', () => {
  let key: CriuCheckKey;
  beforeEach(() => {
    key = criuCheckKey(info())!;
    rememberCheck(cache, key);
  });
  const file = (): string => join(cache, CHECK_CACHE_FILE);

  it('keys by the binary, its version, the kernel and the boot', () => {
    expect(readRememberedCheck(cache, key)).toBeDefined();
    for (const field of ['path', 'mtimeNs', 'ino', 'version', 'kernel', 'bootId'] as const)
      expect(readRememberedCheck(cache, { ...key, [field]: `${key[field]}x` }), field).toBeUndefined();
    expect(readRememberedCheck(cache, { ...key, size: key.size + 1 })).toBeUndefined();
    expect(key.bootId).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  });

  it('is stale after CHECK_REMEMBERED_MS, and never from the future', () => {
    expect(readRememberedCheck(cache, key, Date.now() + CHECK_REMEMBERED_MS + 1000)).toBeUndefined();
    expect(readRememberedCheck(cache, key, Date.now() - 60_000)).toBeUndefined();
  });

  it('ignores a file that is not JSON, not a pass, larger than the bound, writable by others, or a link', () => {
    const good = readFileSync(file(), 'utf8');
    writeFileSync(file(), '{"format": "procsnap-criu-check/1", "ok": tr');
    expect(readRememberedCheck(cache, key)).toBeUndefined();
    writeFileSync(file(), good.replace('"ok":true', '"ok":false'));
    expect(readRememberedCheck(cache, key)).toBeUndefined();
    // The same pass, padded past the bound with spaces (valid JSON still): not read.
    writeFileSync(file(), good.trimEnd() + ' '.repeat(8192));
    expect(readRememberedCheck(cache, key)).toBeUndefined();
    writeFileSync(file(), good);
    expect(readRememberedCheck(cache, key)).toBeDefined();
    chmodSync(file(), 0o622);
    expect(readRememberedCheck(cache, key)).toBeUndefined();
    chmodSync(file(), 0o600);
    const elsewhere = join(dir, 'elsewhere.json');
    writeFileSync(elsewhere, good, { mode: 0o600 });
    rmSync(file());
    symlinkSync(elsewhere, file());
    expect(readRememberedCheck(cache, key)).toBeUndefined();
  });

  it('ignores a FIFO in its place without waiting on it', () => {
    rmSync(file());
    expect(spawnSync('mkfifo', [file()]).status).toBe(0);
    expect(readRememberedCheck(cache, key)).toBeUndefined();
  });
});
