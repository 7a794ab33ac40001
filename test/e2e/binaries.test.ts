// `snap dump --include-binaries`: the executable and every library the tree maps go into the bundle, so gdb names
// the program's own frames on a host that lacks them. Shown in a mount namespace where the worker's directory is
// hidden under an empty tmpfs: with the binaries in the bundle, `snap debug` still names worker_main; without, it
// cannot, and says which executable is missing.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBundle, makeTempDir, removeTempDirs, sha256OfFile } from '../helpers/bundle.js';
import { runSnap, snapEntry } from '../helpers/cli.js';
import { fixtureBin, nodeBin } from '../helpers/paths.js';
import { cleanupAllTargets, startTarget, type Target } from '../helpers/target.js';

let dir: string;
let target: Target;
let withBinaries: string;
let without: string;
const hidden = dirname(fixtureBin('worker'));

beforeAll(async () => {
  dir = makeTempDir('snap-binaries-');
  target = await startTarget({ threads: 3, mib: 4, group: 'setsid' });
  withBinaries = join(dir, 'with.snap.tar.zst');
  without = join(dir, 'without.snap.tar.zst');
  for (const [bundle, extra] of [[withBinaries, ['--include-binaries']], [without, []]] as const) {
    const dump = await runSnap(['dump', String(target.pid), '-o', bundle, ...extra], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(dump.exitCode, dump.stderr).toBe(0);
  }
}, 90_000);
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

/** `snap ARGS` in a mount namespace of its own where the worker's directory is an empty tmpfs. */
function snapWithWorkerHidden(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const script = `mount -t tmpfs -o size=1m tmpfs "$1" && shift && test ! -e "$1" && shift && exec "$@"`;
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', hidden, fixtureBin('worker'), nodeBin, snapEntry, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, NO_COLOR: '1' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('snap dump --include-binaries', () => {
  it('stores the executable and its libraries under binaries/, each once, by their own paths', async () => {
    const entries = await listBundle(withBinaries);
    expect(entries).toContain(`binaries${fixtureBin('worker')}`);
    expect(entries.some((e) => /^binaries\/.*\/libc\.so\.6$/.test(e))).toBe(true);
    expect(new Set(entries).size).toBe(entries.length);
    expect((await listBundle(without)).some((e) => e.startsWith('binaries/'))).toBe(false);
  });

  it("where the executable is hidden: snap debug names the worker's frames from the bundle's copy; without it, says what is missing", () => {
    const gdbArgs = ['--', '-batch', '-ex', 'thread apply all bt', '-ex', 'print snap_ticks'];
    const withIt = snapWithWorkerHidden(['debug', withBinaries, ...gdbArgs]);
    expect(withIt.status, withIt.stderr).toBe(0);
    expect(withIt.stdout).toContain('worker_main');
    expect(withIt.stdout).toMatch(/^\$1 = \d+$/m);
    // The files of the capture host the bundle does not carry (locale, caches) and absent sources are not reported.
    expect(withIt.stderr).not.toMatch(/No such file or directory|auto-load|during file-backed mapping note processing/);

    const withoutIt = snapWithWorkerHidden(['debug', without, ...gdbArgs]);
    expect(withoutIt.stdout).not.toContain('worker_main');
    expect(withoutIt.stderr).toContain(`the executable ${fixtureBin('worker')} is not on this host`);
    expect(withoutIt.stderr).toContain('--include-binaries');
  });

  it('snap core --binaries DIR writes them for another tool, byte for byte; a bundle without them says so (exit 2)', async () => {
    const out = join(dir, 'bins');
    const r = await runSnap(['core', withBinaries, '-o', join(dir, 'with.core'), '--binaries', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(sha256OfFile(join(out, fixtureBin('worker')))).toBe(sha256OfFile(fixtureBin('worker')));
    const none = await runSnap(['core', without, '-o', join(dir, 'without.core'), '--binaries', join(dir, 'none')]);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/carries no binaries; dump with --include-binaries/);
  });
});
