// The sha256 of each entry of a bundle as it is read: a large entry's on a thread of its own, a small one's inline,
// both written to the entry's file when one is given; each digest the entry's own, in the tar's order.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EntryHasher, OFF_THREAD_MIN_BYTES } from '../../src/bundle/entry-hash.js';

const dir = mkdtempSync(join(tmpdir(), 'snap-entry-hash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Gives `data` to the hash in pieces of `piece` bytes, as the tar parser hands an entry's bytes on. */
function feed(h: { update(c: Buffer): void }, data: Buffer, piece: number): void {
  for (let i = 0; i < data.length; i += piece) h.update(data.subarray(i, i + piece));
}

describe('EntryHasher', () => {
  it('gives each entry its own digest and file, large and small, one after another', async () => {
    const hasher = new EntryHasher(true);
    try {
      const entries = [randomBytes(OFF_THREAD_MIN_BYTES + 12345), randomBytes(1000), randomBytes(OFF_THREAD_MIN_BYTES * 2), Buffer.alloc(0)];
      const digests: Promise<string>[] = [];
      const files: string[] = [];
      for (const [i, data] of entries.entries()) {
        const path = join(dir, `entry-${i}`);
        files.push(path);
        const fd = openSync(path, 'wx', 0o600);
        const h = hasher.forEntry(data.length, fd);
        feed(h, data, 65536 + i);
        digests.push(h.digest().finally(() => closeSync(fd)));
      }
      expect(await Promise.all(digests)).toEqual(entries.map(sha));
      for (const [i, data] of entries.entries()) expect(readFileSync(files[i]!).equals(data), `file of entry ${i}`).toBe(true);
    } finally {
      await hasher.close();
    }
  });

  it('writes no byte past the size it was given, and fails that entry\'s digest', async () => {
    const hasher = new EntryHasher(true);
    try {
      for (const size of [1000, OFF_THREAD_MIN_BYTES]) {
        const path = join(dir, `bounded-${size}`);
        const fd = openSync(path, 'wx', 0o600);
        const h = hasher.forEntry(size, fd);
        feed(h, randomBytes(size + 4096), 65536);
        await expect(h.digest()).rejects.toThrow(`more than the ${size} bytes declared`);
        closeSync(fd);
        expect(statSync(path).size, `file of ${size} bytes`).toBeLessThanOrEqual(size);
      }
    } finally {
      await hasher.close();
    }
  });

  it('fails the digest of an entry whose file cannot be written, naming the error', async () => {
    const hasher = new EntryHasher(true);
    try {
      for (const size of [1000, OFF_THREAD_MIN_BYTES]) {
        const fd = openSync(join(dir, `read-only-${size}`), 'wx+', 0o600);
        const ro = openSync(join(dir, `read-only-${size}`), 'r');
        closeSync(fd);
        const h = hasher.forEntry(size, ro);
        feed(h, randomBytes(size), 65536);
        await expect(h.digest()).rejects.toMatchObject({ code: 'EBADF' });
        closeSync(ro);
      }
    } finally {
      await hasher.close();
    }
  });
});
