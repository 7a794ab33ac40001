// Chunks sealed on the sealing threads are the chunks sealChunk makes on the main thread, byte for byte, whatever the
// threads and however the batches fall; a bundle body of many batches reads back whole through snap's reader and age.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { CHUNK, parseAgeHeader, sealChunk } from '../../src/ship/age.js';
import { sealPool } from '../../src/ship/seal-pool.js';
import { bundleEncryption } from '../../src/ship/encrypt.js';
import { openEncrypted, useIdentityFiles } from '../../src/ship/decrypt.js';

const dir = mkdtempSync(join(tmpdir(), 'snap-seal-pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const hasAge = spawnSync('age', ['--version']).status === 0;

const onMainThread = (key: Buffer, first: number, plain: Buffer, last: boolean) => {
  const count = Math.max(1, Math.ceil(plain.length / CHUNK));
  return Buffer.concat(Array.from({ length: count }, (_, i) => sealChunk(key, first + i, last && i === count - 1, plain.subarray(i * CHUNK, (i + 1) * CHUNK))));
};

describe('sealing threads', () => {
  for (const threads of [0, 1, 3]) {
    it(`${threads} threads seal batches as sealChunk does, each at its index, the last flagged`, async () => {
      const key = randomBytes(32);
      const pool = sealPool(key, threads, 16 * CHUNK);
      try {
        const batches = [
          { first: 0, plain: randomBytes(16 * CHUNK), last: false },
          { first: 16, plain: randomBytes(3 * CHUNK), last: false },
          { first: 19, plain: randomBytes(2 * CHUNK + 5), last: true },
          { first: 7, plain: Buffer.alloc(0), last: true },
          // a slice of a larger Buffer, and one of Node's pool of small ones: neither can move as it is
          { first: 40, plain: randomBytes(3 * CHUNK).subarray(CHUNK, 2 * CHUNK), last: false },
          { first: 41, plain: Buffer.from('the end'), last: true },
        ];
        const expected = batches.map((b) => onMainThread(key, b.first, b.plain, b.last));
        // handed over: the ones with memory of their own move to a thread, which is why expected is made first
        const sealed = await Promise.all(batches.map((b) => pool.seal(b.first, b.plain, b.last)));
        sealed.forEach((s, i) => expect(s.equals(expected[i]!), `batch ${i}`).toBe(true));
      } finally {
        await pool.close();
      }
    });
  }

  it('a body of many batches, written in uneven pieces, reads back whole through snap and age', async () => {
    const secret = await generateX25519Identity();
    const idFile = join(dir, 'id.txt');
    writeFileSync(idFile, `${secret}\n`, { mode: 0o600 });
    const enc = await bundleEncryption([await identityToRecipient(secret)]);
    const head = randomBytes(CHUNK);
    const body = randomBytes(100 * CHUNK + 12_345);
    const path = join(dir, 'many.age');
    const fd = openSync(path, 'w', 0o600);
    try {
      const sealed = enc.open(fd, head.length, 'none');
      for (let off = 0; off < body.length; off += 300_007) {
        if (!sealed.input.write(body.subarray(off, off + 300_007))) await new Promise((r) => sealed.input.once('drain', r));
      }
      sealed.input.end();
      await sealed.done;
      sealed.writeHead(head);
    } finally {
      closeSync(fd);
    }
    useIdentityFiles([idFile]);
    const h = parseAgeHeader(readFileSync(path).subarray(0, 4096))!;
    const e = await openEncrypted(path, h);
    const out: Buffer[] = [];
    for await (const c of Readable.from([readFileSync(path)]).pipe(e.decryptor())) out.push(c as Buffer);
    expect(Buffer.concat(out).equals(Buffer.concat([head, body]))).toBe(true);
    if (hasAge) expect(execFileSync('age', ['-d', '-i', idFile, path], { maxBuffer: 64 << 20 }).equals(Buffer.concat([head, body]))).toBe(true);
  });
});
