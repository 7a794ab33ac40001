// Data hidden after the tar's end-of-archive blocks (a second zstd frame holding another entry) is found and refused.
import { describe, expect, it } from 'vitest';
import { TarEndGuard } from '../../src/bundle/tar-end.js';
import { tarHeader } from '../../src/bundle/writer.js';
import { buildTar } from '../helpers/bundles.js';

function guard(data: Buffer, chunk = 777): string | undefined {
  const g = new TarEndGuard();
  for (let i = 0; i < data.length; i += chunk) g.feed(data.subarray(i, i + chunk));
  return g.problem;
}

describe('TarEndGuard', () => {
  const tar = buildTar([{ name: 'manifest.json', data: Buffer.from('{}') }, { name: 'criu/a.img', data: Buffer.alloc(1500, 7) }]);

  it('an archive followed only by zero padding passes, whatever the chunking', () => {
    const padded = Buffer.concat([tar, Buffer.alloc(10240)]);
    for (const chunk of [1, 511, 512, 777, 1 << 20]) expect(guard(padded, chunk)).toBeUndefined();
  });

  it('an entry after the end-of-archive blocks is refused', () => {
    const hidden = buildTar([{ name: 'criu/evil.img', data: Buffer.from('payload') }]);
    expect(guard(Buffer.concat([tar, hidden]))).toMatch(/data after the end of the tar archive/);
  });

  it('an entry whose size needs a pax record (over 8 GiB) is skipped by that size, not the header field', () => {
    const size = 9 * 1024 ** 3;
    const head = tarHeader('core.1', size, new Date(0));
    const g = new TarEndGuard();
    g.feed(head);
    // The guard now skips `size` bytes of data: feeding less than that, non-zero, is not "after the end".
    g.feed(Buffer.alloc(1 << 20, 1));
    expect(g.problem).toBeUndefined();
  });
});
