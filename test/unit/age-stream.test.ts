// The age payload as snap writes and reads it, without a process: a head filled in last, bodies that end inside a
// chunk, exactly at a chunk's end, and one byte past it; each file decrypted by snap's reader and, where Debian's age
// is installed, by age itself. A file cut at a chunk boundary, a swapped chunk and a wrong identity are refused.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { CHUNK, parseAgeHeader, SEALED_CHUNK } from '../../src/ship/age.js';
import { bundleEncryption } from '../../src/ship/encrypt.js';
import { openEncrypted, useIdentityFiles } from '../../src/ship/decrypt.js';
import { BundleEncryptedError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'snap-age-stream-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const hasAge = spawnSync('age', ['--version']).status === 0;

async function identity(name: string): Promise<{ file: string; recipient: string }> {
  const secret = await generateX25519Identity();
  const file = join(dir, name);
  writeFileSync(file, `# test identity\n${secret}\n`, { mode: 0o600 });
  return { file, recipient: await identityToRecipient(secret) };
}

/** Writes `head` (whole chunks) and `body` the way the bundle writer does: body streamed, head encrypted last. */
async function write(path: string, recipients: string[], head: Buffer, body: Buffer): Promise<void> {
  const enc = await bundleEncryption(recipients);
  const fd = openSync(path, 'w', 0o600);
  try {
    const sealed = enc.open(fd, head.length, 'none');
    // in uneven pieces, as a compressor hands them over
    for (let off = 0; off < body.length; off += 10_007) {
      const piece = body.subarray(off, off + 10_007);
      if (!sealed.input.write(piece)) await new Promise((r) => sealed.input.once('drain', r));
    }
    sealed.input.end();
    await sealed.done;
    sealed.writeHead(head);
  } finally {
    closeSync(fd);
  }
}

async function read(path: string): Promise<Buffer> {
  const h = parseAgeHeader(readFileSync(path).subarray(0, 4096))!;
  const e = await openEncrypted(path, h);
  const out: Buffer[] = [];
  for await (const c of Readable.from([readFileSync(path)]).pipe(e.decryptor())) out.push(c as Buffer);
  return Buffer.concat(out);
}

const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

describe('age payload', () => {
  const head = Buffer.concat([Buffer.from('HEAD'), bytes(2 * CHUNK - 4, 7)]);
  for (const bodySize of [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK]) {
    it(`a head of two chunks and a body of ${bodySize} bytes reads back whole`, async () => {
      const a = await identity(`a-${bodySize}.txt`);
      const path = join(dir, `f-${bodySize}.age`);
      const body = bytes(bodySize, bodySize);
      await write(path, [a.recipient], head, body);
      useIdentityFiles([a.file]);
      expect((await read(path)).equals(Buffer.concat([head, body]))).toBe(true);
      if (hasAge) expect(execFileSync('age', ['-d', '-i', a.file, path]).equals(Buffer.concat([head, body]))).toBe(true);
    });
  }

  it('names its recipients in the header, and refuses an identity that is none of them', async () => {
    const a = await identity('r-a.txt');
    const b = await identity('r-b.txt');
    const c = await identity('r-c.txt');
    const path = join(dir, 'two.age');
    await write(path, [a.recipient, b.recipient], head, bytes(100, 1));
    const h = parseAgeHeader(readFileSync(path).subarray(0, 4096))!;
    expect(h.recipients).toEqual([a.recipient, b.recipient]);
    expect(h.stanzas.filter((s) => s.type === 'X25519')).toHaveLength(2);
    useIdentityFiles([c.file]);
    await expect(openEncrypted(path, h)).rejects.toThrow(BundleEncryptedError);
    useIdentityFiles([b.file]);
    expect((await read(path)).subarray(0, 4).toString()).toBe('HEAD');
  });

  it('refuses a file cut at a chunk boundary and one with two chunks swapped', async () => {
    const a = await identity('cut.txt');
    const path = join(dir, 'cut.age');
    await write(path, [a.recipient], head, bytes(3 * CHUNK + 5, 3));
    useIdentityFiles([a.file]);
    const whole = readFileSync(path);
    const start = parseAgeHeader(whole.subarray(0, 4096))!.payloadStart;

    const cut = join(dir, 'cut-short.age');
    writeFileSync(cut, whole.subarray(0, start + 4 * SEALED_CHUNK));
    await expect(read(cut)).rejects.toThrow(/chunk 3 does not decrypt as the last one/);

    const swapped = Buffer.from(whole);
    whole.copy(swapped, start + 2 * SEALED_CHUNK, start + 3 * SEALED_CHUNK, start + 4 * SEALED_CHUNK);
    whole.copy(swapped, start + 3 * SEALED_CHUNK, start + 2 * SEALED_CHUNK, start + 3 * SEALED_CHUNK);
    const swappedPath = join(dir, 'swapped.age');
    writeFileSync(swappedPath, swapped);
    await expect(read(swappedPath)).rejects.toThrow(/chunk 2 does not decrypt/);
  });
});
