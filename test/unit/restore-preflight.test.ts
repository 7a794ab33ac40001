// The restore preflight on a manifest alone: an executable that is not a regular file is refused without reading it
// (hashing /dev/zero never ends), and files criu carries in its images need nothing on the host.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkFiles } from '../../src/pipelines/restore-preflight.js';
import { makeTempDir } from '../helpers/bundle.js';
import { craftedManifest } from '../helpers/bundles.js';

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
      await expect(checkFiles(m)).rejects.toThrow(/not a regular file/);
    });
  }

  it('a deleted open file and a memfd are carried by criu: no check, no refusal', async () => {
    const m = craftedManifest([]);
    m.target.exe = '/bin/true';
    m.target.exeSha256 = null;
    m.target.openFiles = [{ path: '/tmp/gone.log (deleted)', size: 12 }, { path: '/memfd:buf (deleted)', size: 4096 }];
    await expect(checkFiles(m)).resolves.toBeUndefined();
  });
});
