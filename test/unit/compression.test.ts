// detectCompression: the reader picks its decompressor from the bundle's first bytes; long-distance matching, and
// both decoders reading what it makes.
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, type Duplex, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { compressor, decompressor, detectCompression, LONG_WINDOW_LOG, zstdIntoFile, type CompressOptions } from '../../src/bundle/compression.js';
import { ZstdFramesDecompressor } from '../../src/bundle/zstd-frames.js';

function tarHeader(): Buffer {
  const h = Buffer.alloc(512);
  h.write('manifest.json', 0, 'latin1');
  h.write('ustar\u000000', 257, 'latin1');
  return h;
}

describe('detectCompression', () => {
  it('recognises a zstd frame', () => {
    expect(detectCompression(zstdCompressSync(Buffer.from('hello')))).toBe('zstd');
  });

  it('recognises a gzip stream', () => {
    expect(detectCompression(gzipSync(Buffer.from('hello')))).toBe('gzip');
  });

  it('recognises an uncompressed POSIX tar by "ustar" at offset 257', () => {
    expect(detectCompression(tarHeader())).toBe('none');
  });

  it('says unknown for anything else, including a head too short to hold a tar header', () => {
    expect(detectCompression(Buffer.from('PK\u0003\u0004 a zip file'))).toBe('unknown');
    expect(detectCompression(Buffer.alloc(512))).toBe('unknown');
    expect(detectCompression(tarHeader().subarray(0, 261))).toBe('unknown');
    expect(detectCompression(Buffer.alloc(0))).toBe('unknown');
  });
});

describe('long-distance matching (a tree of forked workers)', () => {
  // Three copies of 4 MiB of noise: each repeats the one before 4 MiB back, beyond level 3's window of 2 MiB.
  const block = randomBytes(4 << 20);
  const data = Buffer.concat([block, block, block]);

  async function decoded(frame: Buffer, decoder: Transform | Duplex): Promise<Buffer> {
    const parts: Buffer[] = [];
    await pipeline(Readable.from([frame]), decoder, async function* (source: AsyncIterable<Buffer>) {
      for await (const c of source) parts.push(c);
    });
    return Buffer.concat(parts);
  }

  async function viaProgram(options: CompressOptions): Promise<Buffer> {
    const dir = mkdtempSync(join(tmpdir(), 'snap-long-'));
    const fd = openSync(join(dir, 'out.zst'), 'w+');
    try {
      const z = zstdIntoFile(fd, options)!;
      await Promise.all([pipeline(Readable.from([data]), z.input), z.done]);
      return readFileSync(join(dir, 'out.zst'));
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  }

  async function inNode(options: CompressOptions): Promise<Buffer> {
    return decoded(data, compressor('zstd', options)!);
  }

  for (const [name, compress] of [['the zstd program', viaProgram], ["Node's zstd", inNode]] as const) {
    it(`${name}: the repeats are found, and both decoders give the bytes back`, async () => {
      const plain = await compress({});
      const long = await compress({ longWindowLog: LONG_WINDOW_LOG });
      expect(plain.length).toBeGreaterThan(data.length * 0.9);
      expect(long.length).toBeLessThan(data.length / 2);
      expect((await decoded(long, new ZstdFramesDecompressor())).equals(data)).toBe(true);
      expect((await decoded(long, decompressor('zstd')!)).equals(data)).toBe(true);
    });
  }
});
