// `snap list [DIR...]`: one line per bundle, newest first, from each file's head; files that are not bundles are left
// out, and one named like a bundle is reported as not readable.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap } from '../helpers/cli.js';
import { cleanupAllTargets, startTarget } from '../helpers/target.js';

let dir: string;
let pid: number;
const stamps = ['2026-11-30T10:00:00.000Z', '2026-12-01T09:00:00.000Z', '2026-11-29T08:00:00.000Z'];

beforeAll(async () => {
  const work = makeTempDir('snap-list-work-');
  dir = makeTempDir('snap-list-');
  const target = await startTarget({ threads: 1, mib: 1, group: 'setsid' });
  pid = target.pid;
  const first = join(work, 'first.tar.zst');
  const dump = await runSnap(['dump', String(pid), '-o', first], { env: { PROCSNAP_JOURNAL_DIR: join(work, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  // Three bundles of different times: the same capture with its manifest's createdAt changed (unsigned, so valid).
  for (const [i, when] of stamps.entries()) {
    await repackBundle(first, join(dir, `b${i}.tar.zst`), (x, m: Manifest) => {
      m.createdAt = when;
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
  }
  writeFileSync(join(dir, 'random.bin'), randomBytes(4096));
  writeFileSync(join(dir, 'junk.tar.zst'), randomBytes(4096));
}, 60_000);
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

describe('snap list', () => {
  it('three bundles, newest first, one line each; a file named like a bundle that is not one is reported, the others ignored', async () => {
    const r = await runSnap(['list', dir]);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.map((l) => l.split(/\s+/)[0])).toEqual([stamps[1], stamps[0], stamps[2]]);
    for (const l of lines) expect(l).toMatch(new RegExp(`pid ${pid} worker .* unsigned .*b\\d\\.tar\\.zst$`));
    expect(r.stderr).toMatch(/junk\.tar\.zst is not a readable bundle/);
    expect(r.stderr).not.toContain('random.bin');
  });

  it('--json: the same three, newest first', async () => {
    const r = await runSnap(['list', dir, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { bundles: { path: string; createdAt: string; pid: number; signature: { state: string } }[]; skipped: { path: string }[] };
    expect(result.bundles.map((b) => b.createdAt)).toEqual([stamps[1], stamps[0], stamps[2]]);
    expect(result.bundles.every((b) => b.pid === pid && b.signature.state === 'unsigned')).toBe(true);
    expect(result.skipped.map((s) => s.path)).toEqual([join(dir, 'junk.tar.zst')]);
  });

  it('a directory that does not exist: exit 7, naming it', async () => {
    const r = await runSnap(['list', join(dir, 'missing')]);
    expect(r.exitCode).toBe(7);
    expect(r.stderr).toContain('missing');
  });
});
