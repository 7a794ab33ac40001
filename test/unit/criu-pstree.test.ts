// pstree.img read without crit: the tree the manifest records is the one criu wrote, and a damaged image is refused.
import { describe, expect, it } from 'vitest';
import { ImageFormatError } from '../../src/criu-images/errors.js';
import { PSTREE_MAGIC } from '../../src/criu-images/image-file.js';
import { parsePstreeImage } from '../../src/criu-images/pstree.js';
import { image as criuImage, message, packed } from '../helpers/criu-image-writer.js';

/** A pstree_entry as protobuf-c writes it: threads unpacked (proto2), or packed when asked. */
function entry(t: { pid: number; ppid: number; pgid: number; sid: number; threads: number[] }, asPacked = false): Buffer {
  return message('pstree_entry', { ...t, threads: asPacked ? packed(t.threads) : t.threads });
}

const image = (entries: Buffer[]): Buffer => criuImage(PSTREE_MAGIC, entries);

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
