// Every command that reads a bundle is bounded in memory, disk and time, whatever the bundle holds, signed or not:
// a stacks.json that is a huge array, nesting a few hundred thousand deep or not an array at all; an image declared
// 4 GiB (a header that lies about what follows, or 4 GiB of zeros that compress to almost nothing); a core recipe of
// millions of pieces. `snap stacks` (text and --json), `snap core`, `snap debug` and `snap grep` each refuse them with
// exit 11 and one line naming the entry, under 300 MiB of peak memory, with TMPDIR (and -o) on a small tmpfs left as
// empty as it was: what does not fit is refused before a byte is written. The CRIU images these commands parse are
// held to the same: a pagemap of millions of runs, an mm image of hundreds of thousands of mappings.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, rmSync, statfsSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { zstdCompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { buildTar, decompressBundle, readRawTar, repackBundle, tarHeader, type RawTarEntry } from '../helpers/bundles.js';
import { runSnap, snapWithPeak } from '../helpers/cli.js';
import { cleanupAllTargets, startTarget } from '../helpers/target.js';

const GiB = 1024 ** 3;
const MAX_PEAK_MIB = 300;

let dir: string;
let small: string;
let real: string;
let pid: number;
let journal: string;

function sha256File(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** The real bundle re-packed with `entry` written by `write` and the manifest's record of it made to match. */
async function withEntry(name: string, entry: string, write: (file: string) => void, edit?: (m: Manifest) => void): Promise<string> {
  return repackBundle(real, join(dir, name), (x, m) => {
    const file = join(x, entry);
    rmSync(file, { force: true });
    write(file);
    const record = m.artifacts.find((a) => a.path === entry)!;
    record.size = statSync(file).size;
    record.sha256 = sha256File(file);
    edit?.(m);
    writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
  });
}

/** Writes `count` pieces of text made by `piece`, a MiB at a time, between `head` and `tail`. */
function writeChunked(file: string, head: string, count: number, piece: (i: number) => string, tail: string): void {
  const fd = openSync(file, 'wx', 0o600);
  try {
    writeSync(fd, head);
    let text = '';
    for (let i = 0; i < count; i++) {
      text += (i ? ',' : '') + piece(i);
      if (text.length > 1 << 20) {
        writeSync(fd, text);
        text = '';
      }
    }
    writeSync(fd, text + tail);
  } finally {
    closeSync(fd);
  }
}

const pagesEntry = (m: Manifest) =>
  m.artifacts.filter((a) => /^criu\/pages-\d+\.img$/.test(a.path)).reduce((a, b) => (b.size > a.size ? b : a));

/** The real bundle's tar entries, and its manifest. */
function rawEntries(): { entries: RawTarEntry[]; manifest: Manifest } {
  const entries = readRawTar(decompressBundle(real));
  return { entries, manifest: JSON.parse(entries[0]!.data.toString('utf8')) as Manifest };
}

const tarOf = (entries: { name: string; data: Buffer }[]) => buildTar(entries).subarray(0, -1024); // without the end blocks

beforeAll(async () => {
  dir = makeTempDir('snap-reading-bounds-');
  journal = makeTempDir('snap-reading-bounds-journal-');
  small = makeTempDir('snap-reading-bounds-tmpfs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', small]);
  const target = await startTarget({ threads: 2, mib: 4, group: 'setsid' });
  pid = target.pid;
  real = join(dir, 'real.tar.zst');
  const dump = await runSnap(['dump', String(pid), '-o', real, '--quiet'], { env: { PROCSNAP_JOURNAL_DIR: journal } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  await target.kill();
}, 120_000);

afterAll(async () => {
  await cleanupAllTargets();
  spawnSync('umount', [small]);
  removeTempDirs();
});

interface Case {
  what: string;
  bundle: () => Promise<string>;
  /** What the one line must say, by command. */
  says: (command: string) => RegExp;
}

const commands: Record<string, (bundle: string) => string[]> = {
  stacks: (b) => ['stacks', b],
  'stacks --json': (b) => ['stacks', b, '--json'],
  core: (b) => ['core', b, '-o', join(small, 'out.core')],
  debug: (b) => ['debug', b, '--', '-batch', '-ex', 'info threads'],
  grep: (b) => ['grep', b, 'snap_ticks'],
};

/** Runs `args` with TMPDIR on the small tmpfs: its peak RSS, and the tmpfs as empty afterwards as before. */
function run(args: string[]): { exitCode: number | null; stderr: string; peakMiB: number } {
  expect(readdirSync(small)).toEqual([]);
  const { run, peakKiB } = snapWithPeak(args, { TMPDIR: small, PROCSNAP_JOURNAL_DIR: journal });
  const left = readdirSync(small);
  rmSync(join(small, 'out.core'), { force: true });
  expect(left.filter((n) => n !== 'out.core'), `${args[0]} left behind in TMPDIR`).toEqual([]);
  expect(peakKiB).toBeGreaterThan(0);
  return { exitCode: run.exitCode, stderr: run.stderr, peakMiB: peakKiB / 1024 };
}

/** Exit 11 and one line, `snap: error: ...`, saying `says`; no stack trace. */
function expectRefused(r: { exitCode: number | null; stderr: string }, says: RegExp, what: string): void {
  expect(r.exitCode, `${what}: ${r.stderr}`).toBe(11);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0 && !/^\d{4}-\d\d-\d\dT\S+ /.test(l));
  expect(lines, `${what}: ${r.stderr}`).toHaveLength(1);
  expect(lines[0]).toMatch(/^snap: error: /);
  expect(lines[0], what).toMatch(says);
}

const cases: Case[] = [
  {
    what: 'a stacks.json of 60 MB: one huge array',
    bundle: () => withEntry('stacks-huge.tar.zst', 'stacks.json', (f) => writeChunked(f, '[', 30_000_000, () => '0', ']')),
    says: () => /stacks\.json is declared 57\.2 MiB, more than the [\d.]+ KiB the stacks of the manifest's 2 threads can take/,
  },
  {
    what: 'a stacks.json nested 200,000 arrays deep',
    bundle: () => withEntry('stacks-deep.tar.zst', 'stacks.json', (f) => writeFileSync(f, '['.repeat(200_000) + ']'.repeat(200_000))),
    says: () => /stacks\.json is not what snap writes: \$\[0\]: expected an object, found an array/,
  },
  {
    what: 'a stacks.json that is not an array',
    bundle: () => withEntry('stacks-object.tar.zst', 'stacks.json', (f) => writeFileSync(f, JSON.stringify({ processes: [] }))),
    says: () => /stacks\.json is not what snap writes: \$: expected an array, found an object/,
  },
  {
    what: 'a header declaring a 4 GiB image in front of 64 KiB (the manifest says 4 GiB too)',
    bundle: async () => {
      const { entries, manifest } = rawEntries();
      const pages = pagesEntry(manifest);
      pages.size = 4 * GiB;
      const at = entries.findIndex((e) => e.name === pages.path);
      const before = [{ name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest)) }, ...entries.slice(1, at).map((e) => ({ name: e.name, data: e.data }))];
      const tar = Buffer.concat([tarOf(before), tarHeader({ name: pages.path }, 4 * GiB), Buffer.alloc(64 << 10)]);
      const bundle = join(dir, 'header-4g.tar.zst');
      writeFileSync(bundle, zstdCompressSync(tar));
      return bundle;
    },
    // stacks wants stacks.json only, which comes after the image: the stream ends inside it. core and debug need the
    // images and have no room for them; grep finds the image larger than its pagemap says, before searching it.
    says: (c) =>
      c.startsWith('stacks')
        ? /entry 'criu\/pages-1\.img' is cut short: the bundle ends after \d+ of its 4294967296 bytes/
        : c === 'grep'
          ? /criu\/pages-1\.img is declared 4\.0 GiB but criu\/pagemap-\d+\.img lists [\d.]+ MiB of pages/
          : /criu\/pages-1\.img is declared 4\.0 GiB, the \d+ entries needed [\d.]+ GiB in all, and \S+ \(filesystem \S+ \(tmpfs\)\) has [\d.]+ MiB free; nothing was written there/,
  },
  {
    what: 'a 4 GiB image of zeros, honestly hashed, in a bundle of a few hundred KB (and no stacks.json: stacks unwinds the core)',
    bundle: async () => {
      const { entries, manifest } = rawEntries();
      const pages = pagesEntry(manifest);
      const zeros = Buffer.alloc(1 << 20);
      const hash = createHash('sha256');
      for (let i = 0; i < 4096; i++) hash.update(zeros);
      Object.assign(pages, { size: 4 * GiB, sha256: hash.digest('hex') });
      manifest.artifacts = manifest.artifacts.filter((a) => a.kind !== 'stacks');
      const kept = entries.filter((e) => e.name === 'manifest.json' || manifest.artifacts.some((a) => a.path === e.name));
      const at = kept.findIndex((e) => e.name === pages.path);
      const before = [{ name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest)) }, ...kept.slice(1, at).map((e) => ({ name: e.name, data: e.data }))];
      const after = kept.slice(at + 1).map((e) => ({ name: e.name, data: e.data }));
      // Three zstd frames, one stream: the head and the image's header, the 4 GiB of zeros, the rest and the end.
      const zeroFrame = execFileSync('bash', ['-c', 'head -c 4294967296 /dev/zero | zstd -q -1 -c'], { maxBuffer: 64 << 20 });
      const bundle = join(dir, 'zeros-4g.tar.zst');
      writeFileSync(bundle, Buffer.concat([zstdCompressSync(Buffer.concat([tarOf(before), tarHeader({ name: pages.path }, 4 * GiB)])), zeroFrame, zstdCompressSync(buildTar(after))]));
      return bundle;
    },
    says: (c) =>
      c === 'grep'
        ? /criu\/pages-1\.img is declared 4\.0 GiB but criu\/pagemap-\d+\.img lists [\d.]+ MiB of pages/
        : /criu\/pages-1\.img is declared 4\.0 GiB, the \d+ entries needed [\d.]+ GiB in all, and \S+ \(filesystem \S+ \(tmpfs\)\) has [\d.]+ MiB free; nothing was written there/,
  },
  {
    what: 'a core recipe of 3.8 million pieces',
    bundle: () =>
      withEntry('recipe-millions.tar.zst', `core-recipe.${pid}.json`, (f) => {
        const head = `{"format":"procsnap-core-recipe/1","size":${3_800_000 * 4096},"sha256":"${'0'.repeat(64)}","pieces":[`;
        writeChunked(f, head, 3_800_000, (i) => `{"target":${i * 4096},"bytes":4096,"from":"pages-1.img","offset":0}`, ']}');
      }),
    says: () => /core-recipe\.\d+\.json is declared [\d.]+ MiB, more than the [\d.]+ MiB a recipe of at most \d+ pieces \(what the bundle's [\d.]+ MiB of images and blob can be cut into\) takes/,
  },
  {
    what: 'a core recipe of 150,000 one-byte pieces: under the size a recipe may have, more pieces than the images explain',
    bundle: () =>
      withEntry('recipe-pieces.tar.zst', `core-recipe.${pid}.json`, (f) => {
        const head = `{"format":"procsnap-core-recipe/1","size":${150_000 * 4096},"sha256":"${'0'.repeat(64)}","pieces":[`;
        writeChunked(f, head, 150_000, (i) => `{"target":${i * 4096},"bytes":1,"from":"blob","offset":0}`, ']}');
      }),
    says: () => /core-recipe\.\d+\.json is not what snap writes: \$\.pieces\[\d+\]: more than \d+ items \(what the bundle's [\d.]+ MiB of images and blob can be cut into\)/,
  },
];

describe('reading commands on hostile bundles: exit 11 naming the entry, bounded memory, nothing written', () => {
  for (const c of cases) {
    it(c.what, async () => {
      const bundle = await c.bundle();
      const peaks: string[] = [];
      for (const [command, args] of Object.entries(commands)) {
        const r = run(args(bundle));
        expectRefused(r, c.says(command), command);
        peaks.push(`${command} ${Math.round(r.peakMiB)} MiB`);
        expect(r.peakMiB, `${command}: peak RSS in MiB`).toBeLessThan(MAX_PEAK_MIB);
      }
      expect(existsSync(join(small, 'out.core'))).toBe(false);
      expect(statfsSync(small).bfree).toBe(statfsSync(small).blocks);
      console.log(`${c.what}: peak RSS ${peaks.join(', ')}`);
    }, 300_000);
  }

  it('grep on a pagemap of 3.5 million runs (56 MB) behind a pages image of a few MiB: exit 11 naming the image, under 300 MiB', async () => {
    const varint = (n: number) => {
      const out: number[] = [];
      for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80);
      out.push(n);
      return out;
    };
    const runs = 3_500_000;
    const bundle = await repackBundle(real, join(dir, 'pagemap-runs.tar.zst'), (x, m) => {
      const entry = m.artifacts.find((a) => /^criu\/pagemap-\d+\.img$/.test(a.path))!;
      const original = readFileSync(join(x, entry.path));
      // CRIU's image layout: the common magic, the pagemap magic, then u32 length + protobuf message: the head
      // (pages_id, kept), then a run of one present page every other page.
      const head = original.subarray(12, 12 + original.readUInt32LE(8));
      const parts: Buffer[] = [original.subarray(0, 8), Buffer.from(Uint32Array.of(head.length).buffer), head];
      const one = (i: number) => Buffer.from([0x08, ...varint(0x10000000 + i * 8192), 0x20, 0x04, 0x28, 0x01]);
      for (let i = 0; i < runs; i++) {
        const e = one(i);
        parts.push(Buffer.from(Uint32Array.of(e.length).buffer), e);
      }
      writeFileSync(join(x, entry.path), Buffer.concat(parts));
      Object.assign(entry, { size: statSync(join(x, entry.path)).size, sha256: sha256File(join(x, entry.path)) });
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
    const r = run(commands.grep!(bundle));
    expectRefused(r, /criu\/pages-1\.img is declared [\d.]+ MiB but criu\/pagemap-\d+\.img lists 13\.4 GiB of pages/, 'grep');
    console.log(`grep on a pagemap of ${runs} runs: peak RSS ${Math.round(r.peakMiB)} MiB`);
    expect(r.peakMiB, 'grep: peak RSS in MiB').toBeLessThan(MAX_PEAK_MIB);
  }, 300_000);

});

describe('what passes the bounds is read within them, TMPDIR left empty', () => {
  it('an mm image of 400,000 more mappings (3.8 MiB): core, debug and grep read it, under 300 MiB', async () => {
    const bundle = await repackBundle(real, join(dir, 'mm-vmas.tar.zst'), (x, m) => {
      const entry = m.artifacts.find((a) => /^criu\/mm-\d+\.img$/.test(a.path))!;
      const original = readFileSync(join(x, entry.path));
      // The image's one entry (mm_entry) with field 14 (vma_entry { start 1, end 2 }) repeated: protobuf appends.
      const vma = Buffer.from([0x72, 0x08, 0x08, 0x80, 0x80, 0x04, 0x10, 0x80, 0xa0, 0x04]);
      const extra = Buffer.alloc(vma.length * 400_000);
      for (let i = 0; i < 400_000; i++) vma.copy(extra, i * vma.length);
      const message = Buffer.concat([original.subarray(12, 12 + original.readUInt32LE(8)), extra]);
      const length = Buffer.alloc(4);
      length.writeUInt32LE(message.length);
      writeFileSync(join(x, entry.path), Buffer.concat([original.subarray(0, 8), length, message]));
      Object.assign(entry, { size: statSync(join(x, entry.path)).size, sha256: sha256File(join(x, entry.path)) });
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
    for (const command of ['core', 'debug', 'grep']) {
      // A pattern that hits the worker's own mappings: the mm image is walked to place them.
      const r = run(command === 'grep' ? ['grep', bundle, 'worker'] : commands[command]!(bundle));
      expect(r.exitCode, `${command}: ${r.stderr}`).toBe(0);
      console.log(`${command} with an mm image of 400,000 more mappings: peak RSS ${Math.round(r.peakMiB)} MiB`);
      expect(r.peakMiB, `${command}: peak RSS in MiB`).toBeLessThan(MAX_PEAK_MIB);
    }
  }, 300_000);

  it('a well-formed stacks.json of 30 MiB (a manifest counting 680 threads, 256 frames each): printed whole, text and JSON, under 300 MiB', async () => {
    const threads = 680;
    const bundle = await repackBundle(real, join(dir, 'stacks-680.tar.zst'), (x, m) => {
      const p = m.processes![0]!;
      const host = p.hostPid ?? p.pid;
      Object.assign(p, { threads, tids: Array.from({ length: threads }, (_, i) => host + i) });
      const frame = { pc: '0x7fa896d44545', function: '__GI___clock_nanosleep_with_a_long_name', file: '../sysdeps/unix/sysv/linux/clock_nanosleep.c', line: 48, library: '/lib/x86_64-linux-gnu/libc.so.6' };
      const frames = JSON.stringify(Array.from({ length: 256 }, () => frame));
      const file = join(x, 'stacks.json');
      rmSync(file);
      writeChunked(file, `[{"pid":${host},"comm":"worker","exe":"/x","threads":[`, threads, (i) => `{"tid":${host + i},"frames":${frames}}`, ']}]');
      Object.assign(m.artifacts.find((a) => a.path === 'stacks.json')!, { size: statSync(file).size, sha256: sha256File(file) });
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
    for (const command of ['stacks', 'stacks --json']) {
      const r = run(commands[command]!(bundle));
      expect(r.exitCode, `${command}: ${r.stderr}`).toBe(0);
      console.log(`${command} of ${threads} threads of 256 frames: peak RSS ${Math.round(r.peakMiB)} MiB`);
      expect(r.peakMiB, `${command}: peak RSS in MiB`).toBeLessThan(MAX_PEAK_MIB);
    }
    const json = await runSnap(['stacks', bundle, '--json']);
    const result = JSON.parse(json.stdout) as { processes: { threads: { frames: unknown[] }[] }[] };
    expect(result.processes[0]!.threads).toHaveLength(threads);
    expect(result.processes[0]!.threads.every((t) => t.frames.length === 256)).toBe(true);
  }, 300_000);

  it('the real bundle reads as before with TMPDIR and -o on the same small tmpfs', () => {
    for (const [command, args] of Object.entries(commands)) {
      const r = run(args(real));
      expect(r.exitCode, `${command}: ${r.stderr}`).toBe(0);
      expect(r.peakMiB, `${command}: peak RSS in MiB`).toBeLessThan(MAX_PEAK_MIB);
    }
  });
});
