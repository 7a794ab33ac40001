// The bundle writer: artifacts made while it is already writing (the cores' recipes and stacks, built beside the
// images' streaming) go in after the others, each hashed; a writer whose late artifacts never come leaves nothing.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { list } from 'tar';
import { afterEach, describe, expect, it } from 'vitest';
import { sha256File, sha256FileOffThread, sha256SparseFileOffThread } from '../../src/bundle/hash.js';
import type { ArtifactRecord, Manifest } from '../../src/bundle/manifest.js';
import { writeBundle } from '../../src/bundle/writer.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every entry of a plain tar bundle, by name, with its bytes. */
async function entries(file: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  await list({
    file,
    onReadEntry: (e) => {
      const parts: Buffer[] = [];
      e.on('data', (c: Buffer) => parts.push(c));
      e.on('end', () => out.set(String(e.path), Buffer.concat(parts)));
    },
  });
  return out;
}

describe('writeBundle with artifacts made while it writes', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes the late artifacts after the others, each with its own hash, once they are handed over', async () => {
    dir = mkdtempSync(join(tmpdir(), 'writer-'));
    const work = join(dir, 'work');
    const big = Buffer.alloc(3 << 20, 0x5a); // more than the writer's ring of buffers
    mkdirSync(join(work, 'criu'), { recursive: true });
    writeFileSync(join(work, 'criu', 'pages-1.img'), big);
    let hand!: (a: Pick<ArtifactRecord, 'path' | 'kind'>[]) => void;
    const later = new Promise<Pick<ArtifactRecord, 'path' | 'kind'>[]>((resolve) => (hand = resolve));
    let records: ArtifactRecord[] = [];
    const output = join(dir, 'b.tar');
    const writing = writeBundle({
      workDir: work,
      artifacts: [{ path: 'criu/pages-1.img', kind: 'criu-image' }],
      later,
      laterCount: 2,
      manifest: (r) => ((records = r), { artifacts: r } as unknown as Manifest),
      output,
      compression: 'none',
    });
    // Made after the writer started, as the recipe and the stacks are.
    await sleep(20);
    writeFileSync(join(work, 'core-recipe.1.json'), '{"pieces":[]}');
    writeFileSync(join(work, 'stacks.txt'), 'thread 1:\n  #0 main ()\n');
    expect(existsSync(output), 'not linked before the late artifacts are in').toBe(false);
    hand([{ path: 'core-recipe.1.json', kind: 'core-recipe' }, { path: 'stacks.txt', kind: 'stacks' }]);
    await writing;

    expect(records.map((r) => r.path)).toEqual(['criu/pages-1.img', 'core-recipe.1.json', 'stacks.txt']);
    const inTar = await entries(output);
    expect([...inTar.keys()]).toEqual(['manifest.json', 'criu/pages-1.img', 'core-recipe.1.json', 'stacks.txt']);
    for (const r of records) expect(sha(inTar.get(r.path)!), r.path).toBe(r.sha256);
    expect(JSON.parse(inTar.get('manifest.json')!.toString()).artifacts).toHaveLength(3);
  });

  it('leaves no bundle and no partial file when the late artifacts never come', async () => {
    dir = mkdtempSync(join(tmpdir(), 'writer-'));
    writeFileSync(join(dir, 'a.img'), Buffer.alloc(4096, 1));
    const later = Promise.reject(new Error('the core could not be built'));
    const output = join(dir, 'b.tar.zst');
    await expect(
      writeBundle({
        workDir: dir,
        artifacts: [{ path: 'a.img', kind: 'criu-image' }],
        later,
        manifest: (r) => ({ artifacts: r }) as unknown as Manifest,
        output,
        compression: 'zstd',
      }),
    ).rejects.toThrow(/the core could not be built/);
    expect(readdirSync(dir)).toEqual(['a.img']);
  });
});

describe('writeBundle abandoned', () => {
  it('stops at its next chunk when aborted, removes its file and never links it, though every artifact was there', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writer-'));
    try {
      writeFileSync(join(dir, 'pages-1.img'), Buffer.alloc(64 << 20, 3));
      const stop = new AbortController();
      const output = join(dir, 'b.tar.zst');
      let partial: string | undefined;
      const writing = writeBundle({
        workDir: dir,
        artifacts: [{ path: 'pages-1.img', kind: 'criu-image' }],
        manifest: (r) => ({ artifacts: r }) as unknown as Manifest,
        output,
        compression: 'zstd',
        signal: stop.signal,
        onPartial: (p) => (partial ??= p),
      });
      stop.abort(new Error('interrupted by SIGTERM'));
      await expect(writing).rejects.toThrow(/interrupted by SIGTERM/);
      expect(partial, 'the writer had begun').toBeDefined();
      expect(readdirSync(dir)).toEqual(['pages-1.img']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sha256 of a file on a worker thread', () => {
  it('hashes many files at once and one after another on kept workers, each with its own digest, a failure in between', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hash-many-'));
    try {
      const files = Array.from({ length: 24 }, (_, i) => {
        const data = Buffer.from(Array.from({ length: 4096 + i * 977 }, (_, k) => (k * (i + 3)) % 251));
        writeFileSync(join(dir, `f${i}`), data);
        return { path: join(dir, `f${i}`), sha256: sha(data), size: data.length };
      });
      const at = (i: number) => ({ sha256: files[i]!.sha256, size: files[i]!.size });
      expect(await Promise.all(files.map((f) => sha256FileOffThread(f.path)))).toEqual(files.map((_, i) => at(i)));
      await expect(sha256FileOffThread(join(dir, 'missing'))).rejects.toThrow(/ENOENT/);
      for (let i = 0; i < files.length; i++) expect(await sha256FileOffThread(files[i]!.path)).toEqual(at(i));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is the same digest as on the main thread, sparse or not, and a missing file is an error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hash-'));
    try {
      const data = Buffer.from(Array.from({ length: (2 << 20) + 123 }, (_, i) => (i * 31) % 256));
      writeFileSync(join(dir, 'f'), data);
      expect(await sha256FileOffThread(join(dir, 'f'))).toEqual({ sha256: sha(data), size: data.length });
      expect(await sha256File(join(dir, 'f'))).toEqual({ sha256: sha(data), size: data.length });
      await expect(sha256FileOffThread(join(dir, 'missing'))).rejects.toThrow(/ENOENT/);

      // A sparse file hashed from where its data is: the same digest as reading all of it, overlapping ranges or not.
      const sparse = join(dir, 'sparse');
      const size = (48 << 20) + 5;
      const fd = openSync(sparse, 'w');
      ftruncateSync(fd, size);
      writeSync(fd, data, 0, 4096, 0);
      writeSync(fd, data, 100, 2 << 20, 20 << 20);
      writeSync(fd, Buffer.from('tail'), 0, 4, size - 4);
      closeSync(fd);
      const ranges = [{ at: 20 << 20, bytes: 2 << 20 }, { at: 0, bytes: 4096 }, { at: (20 << 20) + 10, bytes: 100 }, { at: size - 4, bytes: 4 }];
      expect(await sha256SparseFileOffThread(sparse, size, ranges)).toEqual(await sha256File(sparse));
      // A range left out reads as zeros there: another digest, so a missing piece cannot pass.
      expect((await sha256SparseFileOffThread(sparse, size, ranges.slice(1))).sha256).not.toBe((await sha256File(sparse)).sha256);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
