// detectCompression: the reader picks its decompressor from the bundle's first bytes.
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { detectCompression } from '../../src/bundle/compression.js';

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
