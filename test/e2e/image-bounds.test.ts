// The CRIU images `snap restore` reads before criu runs (to check who they would bring back against the manifest) and
// the ones `snap core --pid` builds a core from for a process that got none (--cores root) are the bundle's, and as
// hostile as the rest of it: an mm image of 400,000 more mappings (3.8 MiB) is walked, not decoded whole, by both,
// under 300 MiB of peak memory, with the work directory and -o on a small tmpfs left as empty as they were.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { message as criuMessage } from '../helpers/criu-image-writer.js';
import { runSnap, snapWithPeak } from '../helpers/cli.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

const MAX_PEAK_MIB = 300;
const EXTRA_VMAS = 400_000;

let dir: string;
let small: string;
let journal: string;
let real: string;
let root: number;
let child: number;

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

beforeAll(async () => {
  dir = makeTempDir('snap-image-bounds-');
  journal = makeTempDir('snap-image-bounds-journal-');
  small = makeTempDir('snap-image-bounds-tmpfs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', small]);
  const parent = spawn('/bin/bash', ['-c', 'sleep 300 & wait'], { detached: true, stdio: 'ignore' });
  root = parent.pid!;
  child = await waitFor(() => {
    const kids = readFileSync(`/proc/${root}/task/${root}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return kids.length === 1 && readProcStat(kids[0]!)?.comm === 'sleep' ? kids[0] : undefined;
  }, { what: 'bash and its sleep' });
  real = join(dir, 'tree.tar.zst');
  const dump = await runSnap(['dump', String(root), '-o', real, '--cores', 'root', '--quiet'], { env: { PROCSNAP_JOURNAL_DIR: journal } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  await killPid(child);
  await killPid(root);
}, 120_000);

afterAll(async () => {
  await killPid(child);
  await killPid(root);
  spawnSync('umount', [small]);
  removeTempDirs();
});

/** The tree's bundle with every mm image given EXTRA_VMAS more mappings, the manifest made to match. */
function withManyMappings(name: string): Promise<string> {
  return repackBundle(real, join(dir, name), (x, m: Manifest) => {
    for (const entry of m.artifacts.filter((a) => /^criu\/mm-\d+\.img$/.test(a.path))) {
      const original = readFileSync(join(x, entry.path));
      // The image's one entry (mm_entry) with more vmas (vma_entry { start, end }): protobuf appends a repeated field.
      const vma = criuMessage('mm_entry', { vmas: { start: 0x10000, end: 0x11000 } });
      const extra = Buffer.alloc(vma.length * EXTRA_VMAS);
      for (let i = 0; i < EXTRA_VMAS; i++) vma.copy(extra, i * vma.length);
      const message = Buffer.concat([original.subarray(12, 12 + original.readUInt32LE(8)), extra]);
      const length = Buffer.alloc(4);
      length.writeUInt32LE(message.length);
      writeFileSync(join(x, entry.path), Buffer.concat([original.subarray(0, 8), length, message]));
      Object.assign(entry, { size: statSync(join(x, entry.path)).size, sha256: sha256(join(x, entry.path)) });
    }
    writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
  });
}

/** Runs snap with TMPDIR on the small tmpfs: exit, stderr, peak RSS; the tmpfs left as empty as before. */
function run(args: string[]): { exitCode: number | null; stderr: string; peakMiB: number } {
  expect(readdirSync(small)).toEqual([]);
  const { run, peakKiB } = snapWithPeak(args, { TMPDIR: small, PROCSNAP_JOURNAL_DIR: journal });
  expect(peakKiB).toBeGreaterThan(0);
  return { exitCode: run.exitCode, stderr: run.stderr, peakMiB: peakKiB / 1024 };
}

function expectEmpty(): void {
  expect(readdirSync(small)).toEqual([]);
  expect(statfsSync(small).bfree).toBe(statfsSync(small).blocks);
}

describe('the CRIU images restore and core read are bounded', () => {
  it(`restore of a tree whose mm images list ${EXTRA_VMAS} more mappings: exit 11 naming the image, before criu, under ${MAX_PEAK_MIB} MiB`, async () => {
    const bundle = await withManyMappings('restore-vmas.tar.zst');
    const r = run(['restore', bundle, '--allow-unsigned', '--work-dir', small]);
    console.log(`restore with mm images of ${EXTRA_VMAS} more mappings: exit ${r.exitCode}, peak RSS ${Math.round(r.peakMiB)} MiB`);
    expect(r.exitCode, r.stderr).toBe(11);
    expect(r.stderr).toMatch(/mm-\d+\.img lists \d+ mappings, more than the \d+ this host lets a process have \(vm\.max_map_count\)/);
    expect(r.peakMiB).toBeLessThan(MAX_PEAK_MIB);
    expectEmpty();
  }, 300_000);

  it(`core --pid of the process that got no core, its mm image ${EXTRA_VMAS} mappings longer: built, under ${MAX_PEAK_MIB} MiB`, async () => {
    const bundle = await withManyMappings('core-vmas.tar.zst');
    const out = join(small, 'child.core');
    const r = run(['core', bundle, '--pid', String(child), '-o', out]);
    console.log(`core --pid of a process without a core, ${EXTRA_VMAS} more mappings: exit ${r.exitCode}, peak RSS ${Math.round(r.peakMiB)} MiB`);
    expect([0, 11], r.stderr).toContain(r.exitCode);
    expect(r.peakMiB).toBeLessThan(MAX_PEAK_MIB);
    if (r.exitCode === 0) {
      expect(readdirSync(small)).toEqual(['child.core']);
      rmSync(out);
    }
    expectEmpty();
  }, 300_000);
});
