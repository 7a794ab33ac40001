// pstree.img read without crit: the tree the manifest records is the one criu wrote, and a damaged image is refused.
import { describe, expect, it } from 'vitest';
import { ImageFormatError } from '../../src/tools/criu-image-format.js';
import { parsePstreeImage } from '../../src/tools/criu-pstree.js';

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** A pstree_entry as protobuf-c writes it: threads unpacked (proto2), or packed when asked. */
function entry(t: { pid: number; ppid: number; pgid: number; sid: number; threads: number[] }, packed = false): Buffer {
  const bytes = [0x08, ...varint(t.pid), 0x10, ...varint(t.ppid), 0x18, ...varint(t.pgid), 0x20, ...varint(t.sid)];
  if (packed) {
    const body = t.threads.flatMap(varint);
    bytes.push(0x2a, ...varint(body.length), ...body);
  } else for (const tid of t.threads) bytes.push(0x28, ...varint(tid));
  return Buffer.from(bytes);
}

function image(entries: Buffer[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(0x54564319, 0);
  head.writeUInt32LE(0x50273030, 4);
  const parts = [head];
  for (const e of entries) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(e.length, 0);
    parts.push(len, e);
  }
  return Buffer.concat(parts);
}

describe('parsePstreeImage', () => {
  it('reads every task of a tree with its threads, root first, pids above 2^21 included', () => {
    const img = image([
      entry({ pid: 4000000, ppid: 1, pgid: 4000000, sid: 4000000, threads: [4000000, 4000001, 4000002] }),
      entry({ pid: 4000010, ppid: 4000000, pgid: 4000000, sid: 4000000, threads: [4000010] }, true),
    ]);
    expect(parsePstreeImage(img)).toEqual([
      { pid: 4000000, ppid: 1, pgid: 4000000, sid: 4000000, threads: [4000000, 4000001, 4000002] },
      { pid: 4000010, ppid: 4000000, pgid: 4000000, sid: 4000000, threads: [4000010] },
    ]);
  });

  it('refuses an image with another magic, a truncated entry, or no task', () => {
    const good = image([entry({ pid: 10, ppid: 1, pgid: 10, sid: 10, threads: [10] })]);
    const wrongMagic = Buffer.from(good);
    wrongMagic.writeUInt32LE(0x12345678, 4);
    expect(() => parsePstreeImage(wrongMagic)).toThrow(ImageFormatError);
    expect(() => parsePstreeImage(good.subarray(0, good.length - 2))).toThrow(/truncated/);
    expect(() => parsePstreeImage(image([]))).toThrow(/no task/);
  });
});
