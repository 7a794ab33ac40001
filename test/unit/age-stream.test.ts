// The age payload as snap writes and reads it, without a process: a head filled in last, bodies that end inside a
// chunk, exactly at a chunk's end, and one byte past it; each file decrypted by snap's reader and, where Debian's age
// is installed, by age itself. A file cut at a chunk boundary, a swapped chunk and a wrong identity are refused.
// The same through the sealing thread, which reads a program's output from a FIFO (zstd's, or cat's here, so that
// the payload's size is chosen), and its failure on a full disk.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { CHUNK, newAgePrefix, parseAgeHeader, SEALED_CHUNK, sealChunk } from '../../src/ship/age.js';
import { bundleEncryption } from '../../src/ship/encrypt.js';
import { startFifoSealer } from '../../src/ship/sealing-thread.js';
import { findZstdProgram } from '../../src/bundle/compression.js';
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
async function write(path: string, recipients: string[], head: Buffer, body: Buffer, compression: 'none' | 'zstd' = 'none'): Promise<void> {
  const enc = await bundleEncryption(recipients);
  const fd = openSync(path, 'w', 0o600);
  try {
    const sealed = enc.open(fd, head.length, compression);
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

  it('through zstd and the sealing thread: the payload is the head and the body compressed, and age reads it', async () => {
    expect(findZstdProgram(), 'setup installs the zstd program').toBeTruthy();
    const a = await identity('zstd.txt');
    const path = join(dir, 'zstd.age');
    // Random bytes do not compress: about 40 sealed chunks, more than two of the thread's batches.
    const body = Buffer.concat([randomBytes(40 * CHUNK), bytes(3 * CHUNK, 9)]);
    await write(path, [a.recipient], head, body, 'zstd');
    useIdentityFiles([a.file]);
    const plain = await read(path);
    expect(plain.subarray(0, head.length).equals(head)).toBe(true);
    expect(execFileSync('zstd', ['-d', '-c', '-q'], { input: plain.subarray(head.length), maxBuffer: 64 << 20 }).equals(body)).toBe(true);
    if (hasAge) expect(execFileSync('age', ['-d', '-i', a.file, path], { maxBuffer: 64 << 20 }).equals(plain)).toBe(true);
  });
});

describe('the sealing thread', () => {
  /** What `cat` writes into the thread's FIFO (a file of `body`), sealed from chunk `first` on after `first` chunks
   *  of head: the file's plaintext. */
  async function sealThroughCat(path: string, body: Buffer, first: number): Promise<Buffer> {
    const a = await identity(`cat-${body.length}.txt`);
    const { prefix, key } = await newAgePrefix([a.recipient]);
    const source = join(dir, `cat-${body.length}.in`);
    writeFileSync(source, body);
    const fd = openSync(path, 'w', 0o600);
    try {
      // The prefix and the head's chunks as the writer puts them, then the body through the thread.
      writeSync(fd, prefix, 0, prefix.length, 0);
      for (let i = 0; i < first; i++) writeSync(fd, sealChunk(key, i, false, bytes(CHUNK, i)), 0, SEALED_CHUNK, prefix.length + i * SEALED_CHUNK);
      const sealer = startFifoSealer({ fd, key, payloadStart: prefix.length, first });
      const cat = spawn('cat', [source], { stdio: ['ignore', sealer.writeFd, 'inherit'] });
      const closed = new Promise((r) => cat.once('close', r));
      sealer.handOver();
      expect(await sealer.done).toBe(body.length);
      await closed;
    } finally {
      closeSync(fd);
    }
    useIdentityFiles([a.file]);
    return read(path);
  }

  for (const size of [1, CHUNK, 16 * CHUNK - 1, 16 * CHUNK, 16 * CHUNK + 1, 32 * CHUNK]) {
    it(`seals a body of ${size} bytes read from a FIFO, the last chunk flagged as the file ends`, async () => {
      const body = bytes(size, size % 251);
      const path = join(dir, `thread-${size}.age`);
      const plain = await sealThroughCat(path, body, 2);
      expect(plain.length).toBe(2 * CHUNK + size);
      expect(plain.subarray(0, CHUNK).equals(bytes(CHUNK, 0))).toBe(true);
      expect(plain.subarray(2 * CHUNK).equals(body)).toBe(true);
      // Never an empty last chunk after others (age refuses that): the file's length is that of full chunks and one
      // partial or full last one.
      const start = parseAgeHeader(readFileSync(path).subarray(0, 4096))!.payloadStart;
      const chunks = 2 + Math.ceil(size / CHUNK);
      expect(readFileSync(path).length).toBe(start + (chunks - 1) * SEALED_CHUNK + (size - (Math.ceil(size / CHUNK) - 1) * CHUNK) + 16);
    });
  }

  it.skipIf(process.getuid?.() !== 0)('on a full disk: rejects with ENOSPC, and the program writing into it is stopped', async () => {
    const mnt = mkdtempSync(join(tmpdir(), 'snap-seal-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mnt]);
    try {
      const a = await identity('full.txt');
      const enc = await bundleEncryption([a.recipient]);
      const fd = openSync(join(mnt, 'full.age'), 'w', 0o600);
      try {
        const sealed = enc.open(fd, CHUNK, 'zstd');
        const body = randomBytes(8 << 20);
        const wrote = new Promise<void>((resolve) => sealed.input.end(body, () => resolve()));
        wrote.catch(() => undefined);
        await expect(sealed.done).rejects.toMatchObject({ code: 'ENOSPC' });
      } finally {
        closeSync(fd);
      }
      // zstd, which held the FIFO's write end, is gone: no zstd of this test's is left.
      const zstds = spawnSync('pgrep', ['-P', String(process.pid), 'zstd'], { encoding: 'utf8' }).stdout.trim();
      expect(zstds).toBe('');
    } finally {
      execFileSync('umount', [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});

