// The standalone executable (`npm run build:binary`) on a host with no Node.js: run in a mount namespace where every
// node binary is hidden and the checkout has no node_modules, it checks the host (doctor, whose canary is a real
// dump and restore), dumps a target, inspects the bundle and restores it.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { binaryPath, ensureBinary, ensureDeb } from '../helpers/package.js';
import { fixtureBin, repoRoot } from '../helpers/paths.js';
import { cleanupAllTargets, killPid, processExists, waitFor } from '../helpers/target.js';

const binary = binaryPath;
const root = process.getuid?.() === 0;
let dir: string;

/** The script a shell runs in the namespace: no node anywhere, then the command. */
const hideNode = [
  'set -e',
  'for f in $(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin which -a node nodejs 2>/dev/null | sort -u); do mount --bind /dev/null "$f"; done',
  `mount -t tmpfs none ${JSON.stringify(join(repoRoot, 'node_modules'))}`,
  'if command -v node >/dev/null && node --version >/dev/null 2>&1; then echo "node still runs" >&2; exit 99; fi',
  'exec "$@"',
].join('\n');

/** The executable (or `program` given the executable as $1), in a mount namespace with no node. */
function withoutNode(args: string[], timeoutMs = 180_000, program?: string): { status: number | null; stdout: string; stderr: string } {
  const command = program ? [program, ...args.slice(0, 2), 'session', binary] : [binary, ...args]
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', '--', 'bash', '-c', hideNode, 'hide-node', ...command], {
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', PROCSNAP_JOURNAL_DIR: join(dir, 'journal'), NO_COLOR: '1' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = makeTempDir('snap-binary-');
  ensureBinary();
}, 600_000);
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

describe.skipIf(!root)('the standalone executable, where no node exists', () => {
  it('is one file; --version names the Node inside it, though none is on the host', () => {
    console.log(`build/procsnap: ${(statSync(binary).size / 1048576).toFixed(1)} MiB`);
    const r = withoutNode(['--version']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^procsnap\/\d+\.\d+\.\d+ linux-x64 node-v24\./);
  });

  it('a new unpack removes the copies of older builds unused for a day, and half-unpacked ones; a recent one stays', () => {
    const base = '/var/lib/procsnap/app';
    expect(withoutNode(['--version']).status).toBe(0);
    const current = readdirSync(base).filter((e) => /^[0-9a-f]{24}$/.test(e) && existsSync(join(base, e, '.complete')));
    const old = join(base, 'f'.repeat(24));
    const recent = join(base, 'e'.repeat(24));
    const half = join(base, `${'d'.repeat(24)}.tmp-999999999`); // no such pid
    for (const d of [old, recent, half]) mkdirSync(d, { recursive: true, mode: 0o755 });
    for (const d of [old, recent]) writeFileSync(join(d, '.complete'), 'x\n');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    utimesSync(join(old, '.complete'), twoDaysAgo, twoDaysAgo);
    try {
      // As on a host where this build runs for the first time: no copy of it yet.
      for (const c of current) rmSync(join(base, c), { recursive: true, force: true });
      const r = withoutNode(['--version']);
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(old)).toBe(false);
      expect(existsSync(half)).toBe(false);
      expect(existsSync(recent)).toBe(true);
      // This build's copy, unpacked again; the older builds' copies were removed above, as a new build would find them.
      const now = readdirSync(base).filter((e) => /^[0-9a-f]{24}$/.test(e) && e !== 'e'.repeat(24) && existsSync(join(base, e, '.complete')));
      expect(now).toHaveLength(1);
    } finally {
      for (const d of [old, recent, half]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('doctor passes, its canary dumped and restored', () => {
    const r = withoutNode(['doctor', '--json']);
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const report = JSON.parse(r.stdout) as { ok: boolean; canary?: { ok: boolean } };
    expect(report.ok).toBe(true);
    expect(report.canary?.ok).toBe(true);
  });

  it('dumps a target, inspects the bundle, and restores it after the target is killed', async () => {
    // All in one namespace: criu dumps and restores a process of its own mount namespace, as on a real host.
    const progress = join(dir, 'progress');
    const bundle = join(dir, 'b.tar.zst');
    const out = (n: string) => join(dir, `${n}.json`);
    const session = [
      `${JSON.stringify(fixtureBin('worker'))} --threads 2 --mib 8 --tick-ms 10 --progress ${JSON.stringify(progress)} --setsid </dev/null >/dev/null 2>&1 &`,
      'pid=$!',
      `for i in $(seq 100); do [ -s ${JSON.stringify(progress)} ] && break; sleep 0.05; done`,
      `"$1" dump $pid -o ${JSON.stringify(bundle)} --json >${out('dump')}`,
      `"$1" inspect ${JSON.stringify(bundle)} --json >${out('inspect')}`,
      'kill -9 $pid; while kill -0 $pid 2>/dev/null; do sleep 0.05; done',
      `"$1" restore ${JSON.stringify(bundle)} --allow-unsigned --json >${out('restore')}`,
    ].join('\n');
    const r = withoutNode(['-c', session], 180_000, '/bin/bash');
    expect(r.status, r.stderr).toBe(0);
    const dump = JSON.parse(readFileSync(out('dump'), 'utf8')) as { pid: number; finalState: string };
    expect(dump.finalState).toBe('running');
    expect(JSON.parse(readFileSync(out('inspect'), 'utf8')).manifest.target.pid).toBe(dump.pid);
    const restored = JSON.parse(readFileSync(out('restore'), 'utf8')) as { pid: number; finalState: string };
    expect(restored).toMatchObject({ pid: dump.pid, finalState: 'running' });
    try {
      const ticks = () => Number(/ticks=(\d+)/.exec(readFileSync(progress, 'latin1'))?.[1] ?? NaN);
      const at = ticks();
      await waitFor(() => ticks() > at, { what: 'the restored target to tick on' });
      expect(readFileSync(`/proc/${restored.pid}/comm`, 'utf8').trim()).toBe('worker');
    } finally {
      await killPid(restored.pid);
    }
    expect(processExists(restored.pid)).toBe(false);
  });
});

describe.skipIf(!root)('the Debian package', () => {
  it('installs with dpkg -i (into a copy of this host\'s package database) and, from its own files alone, procsnap doctor passes', () => {
    const debPath = ensureDeb();
    const built = basename(debPath);
    console.log(`${built}: ${(statSync(debPath).size / 1048576).toFixed(1)} MiB`);
    // The host's own database, copied: dpkg checks the package's dependencies against what is installed here, and
    // the host's real database is never touched.
    const inst = join(dir, 'dpkg-root');
    execFileSync('mkdir', ['-p', join(inst, 'var', 'lib')]);
    execFileSync('cp', ['-a', '/var/lib/dpkg', join(inst, 'var', 'lib')]);
    // --no-triggers: the host's man-db trigger has no program to run in this root; the package has no scripts.
    const install = spawnSync('dpkg', [`--root=${inst}`, '--no-triggers', '-i', debPath], { encoding: 'utf8' });
    expect(install.status, install.stderr).toBe(0);
    const status = spawnSync('dpkg-query', [`--root=${inst}`, '-W', '-f=${Status} ${Version}', 'procsnap'], { encoding: 'utf8' });
    expect(status.stdout).toMatch(/^install ok installed \d+\.\d+\.\d+$/);
    for (const f of ['usr/bin/procsnap', 'opt/procsnap/bin/criu', 'opt/procsnap/bin/gdb', 'usr/share/man/man1/procsnap.1.gz', 'usr/share/bash-completion/completions/procsnap'])
      expect(existsSync(join(inst, f)), f).toBe(true);
    // Its files where the package puts them, over the host's (bind mounts in a private namespace), and no node.
    const script = [
      'set -e',
      `mount --bind ${JSON.stringify(join(inst, 'opt', 'procsnap'))} /opt/procsnap`,
      hideNode.replace('exec "$@"', ''),
      `exec ${JSON.stringify(join(inst, 'usr', 'bin', 'procsnap'))} doctor --json`,
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', '--', 'bash', '-c', script], {
      encoding: 'utf8',
      timeout: 180_000,
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', PROCSNAP_JOURNAL_DIR: join(dir, 'journal'), NO_COLOR: '1' },
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const report = JSON.parse(r.stdout) as { ok: boolean; criu: { path: string }; canary?: { ok: boolean } };
    expect(report.ok).toBe(true);
    expect(report.criu.path).toBe('/opt/procsnap/bin/criu');
    expect(report.canary?.ok).toBe(true);
  });
});
