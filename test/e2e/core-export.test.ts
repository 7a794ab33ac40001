// `snap core BUNDLE [--pid P] -o FILE`: the stored core of a process comes out byte for byte as the manifest
// records it; a process that got none (--cores root) gets one built from the bundle's CRIU images; an existing file
// is never overwritten, and a pid that is not in the tree is named with the ones that are.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs, sha256OfFile } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
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
  const dump = await runSnap(['dump', String(root), '-o', bundle, '--cores', 'root'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  manifest = await readBundleManifest(bundle);
}, 60_000);

afterAll(async () => {
  await killPid(child);
  await killPid(root);
  removeTempDirs();
});

describe('snap core', () => {
  it("rebuilds the root's core from its recipe over the images: 0600, the sha256 recorded at the dump", async () => {
    const out = join(dir, 'root.core');
    const r = await runSnap(['core', bundle, '-o', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { pid: number; source: string; sha256: string };
    expect(result).toMatchObject({ pid: root, source: 'recipe' });
    const recorded = manifest.processes!.find((p) => p.pid === root)!.coreSha256;
    expect(recorded).toMatch(/^[0-9a-f]{64}$/);
    expect(sha256OfFile(out)).toBe(recorded);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(elfType(out)).toBe(4);
  });

  it('refuses a recipe whose core does not come out with the recorded sha256 (a blob changed), writing nothing', async () => {
    // The blob is rewritten with its sha256 updated in the manifest, as a sender who edits a bundle would: verify
    // passes, and only the rebuilt core's own sha256 shows it is not the core of the dump.
    const edited = await repackBundle(bundle, join(dir, 'edited.snap.tar.zst'), (x) => {
      const blob = join(x, `core-blob.${root}`);
      const bytes = readFileSync(blob);
      bytes[bytes.length - 1] = bytes.at(-1)! ^ 0xff;
      writeFileSync(blob, bytes);
      const m = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8')) as Manifest;
      const a = m.artifacts.find((e) => e.path === `core-blob.${root}`)!;
      a.sha256 = sha256OfFile(blob);
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
    const out = join(dir, 'edited.core');
    const r = await runSnap(['core', edited, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(8);
    expect(r.stderr).toMatch(/rebuilt core's sha256 .* is not the .* recorded at the dump/);
    expect(existsSync(out)).toBe(false);
  });

  it('writes a core stored in the bundle (--core-only: no images to keep it as a recipe over) as it is stored', async () => {
    const storedBundle = join(dir, 'core-only.snap.tar.zst');
    const dump = await runSnap(['dump', String(root), '-o', storedBundle, '--cores', 'root', '--core-only'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const stored = (await readBundleManifest(storedBundle)).artifacts.find((a) => a.path === `core.${root}`)!;
    const out = join(dir, 'stored.core');
    const r = await runSnap(['core', storedBundle, '-o', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ source: 'stored', sha256: stored.sha256 });
  });

  it('rebuilds gdb\'s core (--core gcore), kept as a recipe over the images, to the sha256 of the file gdb wrote', async () => {
    const gcoreBundle = join(dir, 'gcore.snap.tar.zst');
    const dump = await runSnap(['dump', String(root), '-o', gcoreBundle, '--cores', 'root', '--core', 'gcore'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const m = await readBundleManifest(gcoreBundle);
    expect(m.artifacts.map((a) => a.path)).not.toContain(`core.${root}`);
    const record = m.processes!.find((p) => (p.hostPid ?? p.pid) === root)!;
    expect(record).toMatchObject({ coreStored: false });
    const out = join(dir, 'gcore.core');
    const r = await runSnap(['core', gcoreBundle, '-o', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ source: 'recipe', sha256: record.coreSha256 });
    expect(elfType(out)).toBe(4);
  });

  it('builds the core of a process that got none from the CRIU images: an ELF core', async () => {
    expect(manifest.artifacts.map((a) => a.path)).not.toContain(`core.${child}`);
    const out = join(dir, 'child.core');
    const r = await runSnap(['core', bundle, '--pid', String(child), '-o', out, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ pid: child, source: 'built' });
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
