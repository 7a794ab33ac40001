// zstd without the zstd program: a bundle is several frames (the head, a skippable filler, the rest), and Node's own
// zstd stream decodes only the first. The frame splitter decodes each, whatever the chunking, in bounded memory.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { compressSmall, filler } from '../../src/bundle/compression.js';
import { ZstdFramesDecompressor } from '../../src/bundle/zstd-frames.js';

async function decode(input: Buffer, chunk: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  const pieces = function* () {
    for (let i = 0; i < input.length; i += chunk) yield input.subarray(i, i + chunk);
  };
  const d = new ZstdFramesDecompressor();
  d.on('data', (c: Buffer) => parts.push(c));
  await pipeline(Readable.from(pieces()), d);
  return Buffer.concat(parts);
}

describe('ZstdFramesDecompressor', () => {
  // As a bundle is laid out: a small head frame with a checksum, a skippable filler, a large streamed frame without
  // one (compressible and random parts), and a last small frame.
  const head = Buffer.from('{"format":"procsnap-bundle"}\n'.repeat(40));
  const body = Buffer.concat([Buffer.alloc(3 << 20, 0x61), randomBytes(2 << 20), Buffer.alloc(100_000, 7)]);
  const tail = Buffer.from('the end');
  const streamed = zlib.zstdCompressSync(body, { params: { [zlib.constants.ZSTD_c_checksumFlag]: 0 } });
  const input = Buffer.concat([compressSmall('zstd', head), filler('zstd', 4096), streamed, compressSmall('zstd', tail)]);
  const expected = Buffer.concat([head, body, tail]);

  it('decodes every frame and skips the skippable ones, whatever the chunking', async () => {
    for (const chunk of [4 << 20, 1 << 20, 65537, 4096, 1021]) expect((await decode(input, chunk)).equals(expected), `chunks of ${chunk}`).toBe(true);
    // Byte by byte over the frames whose boundaries matter most: head, filler, the start of the next frame.
    const small = Buffer.concat([compressSmall('zstd', head), filler('zstd', 64), compressSmall('zstd', tail)]);
    expect((await decode(small, 1)).equals(Buffer.concat([head, tail]))).toBe(true);
  });

  it('is what Node\'s own zstd stream cannot do: it stops at the skippable frame', async () => {
    const node = zlib.createZstdDecompress();
    const parts: Buffer[] = [];
    node.on('data', (c: Buffer) => parts.push(c));
    const outcome = await pipeline(Readable.from([input]), node).then(() => 'ok', (e: Error) => e.message);
    expect(outcome === 'ok' ? Buffer.concat(parts).length : -1).not.toBe(expected.length);
  });

  it('decodes no further ahead of a reader that does not read than a few MiB', async () => {
    const big = randomBytes(48 << 20);
    const z = zlib.zstdCompressSync(big);
    let fed = 0;
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < z.length; i += 1 << 20) {
          fed += Math.min(1 << 20, z.length - i);
          yield z.subarray(i, i + (1 << 20));
        }
      })(),
    );
    const d = new ZstdFramesDecompressor();
    source.pipe(d);
    // Until the input stops moving (held back by the Transform's readable side), within a deadline.
    let last = -1;
    for (const end = Date.now() + 10_000; Date.now() < end && fed !== last; ) {
      last = fed;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(fed, 'compressed bytes taken in while nothing was read').toBeLessThan(24 << 20);
    const parts: Buffer[] = [];
    for await (const c of d) parts.push(c as Buffer);
    expect(Buffer.concat(parts).equals(big)).toBe(true);
  });

  it('refuses a truncated frame and bytes that are no zstd frame', async () => {
    await expect(decode(input.subarray(0, input.length - 3), 65536)).rejects.toThrow(/truncated|ends inside/);
    await expect(decode(Buffer.concat([compressSmall('zstd', head), Buffer.from('PK\u0003\u0004junk')]), 4096)).rejects.toThrow(/not a zstd frame/);
    await expect(decode(Buffer.alloc(0), 4096)).rejects.toThrow(/no zstd frame/);
  });
});
