// `snap core BUNDLE [--pid P] -o FILE`: the stored core of a process comes out byte for byte as the manifest
// records it; a process that got none (--cores root) gets one built from the bundle's CRIU images; an existing file
// is never overwritten, and a pid that is not in the tree is named with the ones that are.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs, sha256OfFile } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

let dir: string;
let bundle: string;
let manifest: Manifest;
let root: number;
let child: number;

const elfType = (file: string): number => {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(18);
    readSync(fd, b, 0, 18, 0);
    return b.subarray(0, 4).toString('latin1') === '\x7fELF' ? b.readUInt16LE(16) : -1;
  } finally {
    closeSync(fd);
  }
};

beforeAll(async () => {
  dir = makeTempDir('snap-core-export-');
  const parent = spawn('/bin/bash', ['-c', 'sleep 300 & wait'], { detached: true, stdio: 'ignore' });
  root = parent.pid!;
  child = await waitFor(() => {
    const kids = readFileSync(`/proc/${root}/task/${root}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return kids.length === 1 && readProcStat(kids[0]!)?.comm === 'sleep' ? kids[0] : undefined;
  }, { what: 'bash and its sleep' });
  bundle = join(dir, 'tree.snap.tar.zst');
  const dump = await runSnap(['dump', String(root), '-o', bundle, '--cores', 'root'], { env: { SNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  manifest = await readBundleManifest(bundle);
}, 60_000);

afterAll(async () => {
  await killPid(child);
  await killPid(root);
  removeTempDirs();
});

describe('snap core', () => {
  it("writes the root's stored core, 0600, with the sha256 the manifest records for it", async () => {
    const out = join(dir, 'root.core');
    const r = await runSnap(['core', bundle, '-o', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { pid: number; source: string; sha256: string };
    expect(result).toMatchObject({ pid: root, source: 'stored' });
    const recorded = manifest.artifacts.find((a) => a.path === `core.${root}`)!;
    expect(sha256OfFile(out)).toBe(recorded.sha256);
    expect(result.sha256).toBe(recorded.sha256);
    expect(statSync(out).mode & 0o777).toBe(0o600);
  });

  it('builds the core of a process that got none from the CRIU images: an ELF core', async () => {
    expect(manifest.artifacts.map((a) => a.path)).not.toContain(`core.${child}`);
    const out = join(dir, 'child.core');
    const r = await runSnap(['core', bundle, '--pid', String(child), '-o', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ pid: child, source: 'rebuilt' });
    expect(elfType(out)).toBe(4);
  });

  it('never overwrites a file (exit 7, the file unchanged) and names the processes of the tree for a pid not in it (exit 2)', async () => {
    const existing = join(dir, 'existing');
    writeFileSync(existing, 'keep me');
    const clash = await runSnap(['core', bundle, '-o', existing]);
    expect(clash.exitCode).toBe(7);
    expect(clash.stderr).toMatch(/already exists/);
    expect(readFileSync(existing, 'utf8')).toBe('keep me');

    const stranger = await runSnap(['core', bundle, '--pid', '999999', '-o', join(dir, 'none')]);
    expect(stranger.exitCode).toBe(2);
    expect(stranger.stderr).toContain(`its processes are ${root}, ${child}`);
  });
});
