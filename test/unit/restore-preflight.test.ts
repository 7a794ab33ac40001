// The restore preflight on a manifest alone: an executable that is not a regular file is refused without reading it
// (hashing /dev/zero never ends), and files criu carries in its images need nothing on the host. A host file is
// hashed in chunks that stop at the --timeout and at a cancel signal, whatever its size.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { OperationBudget } from '../../src/pipelines/budget.js';
import { checkFiles, sha256Within } from '../../src/pipelines/restore/host-checks.js';
import { makeTempDir } from '../helpers/bundle.js';
import { craftedManifest } from '../helpers/bundles.js';

const budget = (cancel = new AbortController().signal, timeoutSec?: number) => new OperationBudget(cancel, timeoutSec, 'restore');

describe('checkFiles', () => {
  for (const [what, make] of [
    ['/dev/zero', () => '/dev/zero'],
    ['a FIFO', () => {
      const p = join(makeTempDir('snap-fifo-'), 'fifo');
      execFileSync('mkfifo', [p]);
      return p;
    }],
  ] as const) {
    it(`an executable that is ${what} is refused, not hashed`, async () => {
      const m = craftedManifest([]);
      m.target.exe = make();
      m.target.exeSha256 = '0'.repeat(64);
      await expect(checkFiles(m, budget())).rejects.toThrow(/not a regular file/);
    });
  }

  it('a deleted open file and a memfd are carried by criu: no check, no refusal', async () => {
    const m = craftedManifest([]);
    m.target.exe = '/bin/true';
    m.target.exeSha256 = null;
    m.target.openFiles = [{ path: '/tmp/gone.log (deleted)', size: 12 }, { path: '/memfd:buf (deleted)', size: 4096 }];
    await expect(checkFiles(m, budget())).resolves.toBeUndefined();
  });

  it('an executable recorded by its size alone (too large to hash at dump) is still held to that size', async () => {
    const m = craftedManifest([]);
    m.target.exe = '/bin/true';
    m.target.exeSha256 = null;
    m.target.exeSize = statSync('/bin/true').size + 1;
    await expect(checkFiles(m, budget())).rejects.toThrow(/executable \/bin\/true differs from the one dumped \(\d+ bytes now, \d+ at dump\)/);
    m.target.exeSize = statSync('/bin/true').size;
    await expect(checkFiles(m, budget())).resolves.toBeUndefined();
  });
});

describe('sha256Within', () => {
  it('hashes a file as sha256 does', async () => {
    expect(await sha256Within('/bin/true', budget(), 'hashing')).toBe(createHash('sha256').update(readFileSync('/bin/true')).digest('hex'));
  });

  it('a 1 TiB sparse file: stopped at the --timeout with StepTimeoutError', async () => {
    const big = join(makeTempDir('snap-sparse-'), 'exe');
    execFileSync('truncate', ['-s', '1T', big]);
    await expect(sha256Within(big, budget(undefined, 1), 'hashing')).rejects.toMatchObject({ name: 'StepTimeoutError' });
  });

  it('a 1 TiB sparse file: stopped by the cancel signal with InterruptedError', async () => {
    const big = join(makeTempDir('snap-sparse-'), 'exe');
    execFileSync('truncate', ['-s', '1T', big]);
    const cancel = new AbortController();
    setTimeout(() => cancel.abort('SIGTERM'), 300);
    await expect(sha256Within(big, budget(cancel.signal), 'hashing the executable')).rejects.toThrow(/interrupted by SIGTERM during hashing the executable/);
  });
});
