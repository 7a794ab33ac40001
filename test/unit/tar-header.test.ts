// Artifacts over 8 GiB (a JVM's core) get a header every reader understands, instead of the capture being thrown away.
import { describe, expect, it } from 'vitest';
import { Parser, type ReadEntry } from 'tar';
import { tarHeader } from '../../src/bundle/writer.js';

function firstEntry(header: Buffer): Promise<{ path: string; size: number; type: string }> {
  return new Promise((resolve, reject) => {
    const parser = new Parser({ strict: true });
    parser.on('entry', (e: ReadEntry) => {
      resolve({ path: e.path, size: e.size, type: e.type });
      e.resume();
    });
    parser.on('error', reject);
    parser.on('warn', (_code: string, message: string) => reject(new Error(message)));
    parser.write(header);
  });
}

describe('tarHeader', () => {
  it('a size under 8 GiB: one plain 512-byte header', async () => {
    const h = tarHeader('core.42', 1234, new Date(0));
    expect(h.length).toBe(512);
    expect(await firstEntry(h)).toEqual({ path: 'core.42', size: 1234, type: 'File' });
  });

  it('9 GiB: a pax size record ahead of the header, read back as the exact size', async () => {
    const size = 9 * 1024 ** 3 + 7;
    const h = tarHeader('core.42', size, new Date(0));
    expect(h.length).toBeGreaterThan(512);
    expect(h.toString('latin1')).toContain(`size=${size}`);
    expect(await firstEntry(h)).toEqual({ path: 'core.42', size, type: 'File' });
  });

  it('a name too long for a header is refused rather than cut', () => {
    expect(() => tarHeader('x'.repeat(101), 1, new Date(0))).toThrow(/too long/);
  });
});
