// The dump hashes the target's executable within a time of its own, before the target is touched: a 1 TiB sparse file
// run as the program (it reads as zeros for ever) is hashed for at most a share of --timeout, or a fixed limit without
// one, and then recorded by its size alone, the result saying what was not hashed and why; a SIGTERM or SIGINT while it
// hashes ends the dump with the target never stopped.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, startSnap, type SnapResult } from '../helpers/cli.js';
import { killPid, processExists, readProcStat, waitFor } from '../helpers/target.js';

const TiB = 1024 ** 4;
let dir: string;
let exe: string;
let pid: number;
const env = () => ({ PROCSNAP_JOURNAL_DIR: join(dir, 'journal') });

beforeAll(async () => {
  dir = makeTempDir('snap-exe-hash-');
  exe = join(dir, 'sleeper');
  // A real program, grown to 1 TiB: the loader reads only its headers, so it runs as it did.
  copyFileSync('/bin/sleep', exe);
  execFileSync('truncate', ['-s', '1T', exe]);
  execFileSync('chmod', ['755', exe]);
  const child = spawn(exe, ['1000'], { detached: true, stdio: 'ignore' });
  pid = child.pid!;
  child.unref();
  await waitFor(() => readProcStat(pid)?.state === 'S', { what: 'the sleeper to sleep' });
});

afterAll(async () => {
  if (pid && processExists(pid)) await killPid(pid);
  removeTempDirs();
});

/** The target is as it was found: alive and sleeping, never left stopped. */
function expectTargetRunning(): void {
  expect(processExists(pid), 'the target is alive').toBe(true);
  expect(readProcStat(pid)?.state, 'the target is not left stopped').toBe('S');
}

async function manifestOf(bundle: string): Promise<Manifest> {
  const inspect = await runSnap(['inspect', bundle, '--json'], { env: env() });
  expect(inspect.exitCode, inspect.stderr).toBe(0);
  return (JSON.parse(inspect.stdout) as { manifest: Manifest }).manifest;
}

describe('a 1 TiB sparse file run as the executable', () => {
  it('dump --timeout 5: captured (exit 0), the executable recorded by its size without a sha256, the result and the manifest saying why', async () => {
    const bundle = join(dir, 'timeout.tar.zst');
    const run = await runSnap(['dump', String(pid), '-o', bundle, '--timeout', '5', '--json'], { env: env(), timeoutMs: 60_000 });
    expect(run.timedOut, 'snap ended by itself').toBe(false);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { warnings: string[]; finalState: string };
    const said = result.warnings.find((w) => w.startsWith(`executable ${exe} (1.0 TiB) was not hashed: `));
    expect(said, run.stdout).toBeDefined();
    expect(said).toMatch(/given to hashing \(a quarter of what was left of --timeout\)/);
    expect(run.stderr).toContain(`warning: executable ${exe} (1.0 TiB) was not hashed`);
    expectTargetRunning();
    const manifest = await manifestOf(bundle);
    expect(manifest.target.exe).toBe(exe);
    expect(manifest.target.exeSha256).toBeNull();
    expect(manifest.target.exeSize).toBe(TiB);
    expect(manifest.warnings).toContain(said);
  });

  it('dump without --timeout: hashing stops at its own limit and the dump goes on (exit 0), saying so', async () => {
    const bundle = join(dir, 'no-timeout.tar.zst');
    const run = await runSnap(['dump', String(pid), '-o', bundle, '--json'], { env: env(), timeoutMs: 90_000 });
    expect(run.timedOut, 'snap ended by itself').toBe(false);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { warnings: string[] };
    expect(result.warnings.find((w) => w.startsWith(`executable ${exe} (1.0 TiB) was not hashed: `)), run.stdout).toMatch(/\(the most a dump spends hashing\)/);
    expectTargetRunning();
    expect((await manifestOf(bundle)).target).toMatchObject({ exeSha256: null, exeSize: TiB });
  });

  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    it(`${signal} while it hashes: the dump ends with exit ${code}, the target never stopped, no bundle left`, async () => {
      const bundle = join(dir, `${signal}.tar.zst`);
      const snap = startSnap(['dump', String(pid), '-o', bundle], { env: env(), timeoutMs: 60_000 });
      let stderr = '';
      snap.child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      await waitFor(() => stderr.includes('[start] Preflight'), { what: 'the preflight to start', timeoutMs: 30_000 });
      // Inside the hash's own limit: the executable is still being read.
      await new Promise((r) => setTimeout(r, 1000));
      snap.child.kill(signal);
      const run: SnapResult = await snap.result;
      expect(run.timedOut, 'snap ended by itself').toBe(false);
      expect(run.exitCode, run.stderr).toBe(code);
      expect(run.stderr).toMatch(new RegExp(`interrupted by ${signal} during (preflight|hashing the executable)`));
      expect(run.stderr).not.toContain('[start] Stop every process of the tree');
      expectTargetRunning();
      expect(existsSync(bundle), 'no bundle').toBe(false);
      expect(readdirSync(dir).filter((n) => n.includes(`${signal}.tar.zst`)), 'no partial bundle nor work directory').toEqual([]);
    });
  }
});

describe('a 1 TiB sparse file run as the executable, with --include-binaries', () => {
  it('is not copied into the bundle: a warning names it and the cap, the libraries are stored, the target runs on', async () => {
    const bundle = join(dir, 'binaries.tar.zst');
    const run = await runSnap(['dump', String(pid), '-o', bundle, '--include-binaries', '--timeout', '5', '--json'], { env: env(), timeoutMs: 120_000 });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { warnings: string[] };
    expect(result.warnings).toContainEqual(expect.stringMatching(new RegExp(`^${exe.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(1048576 MiB\\) is not stored: larger than the 2 GiB one file may take`)));
    const manifest = await manifestOf(bundle);
    const stored = manifest.artifacts.filter((a) => a.kind === 'binary').map((a) => a.path);
    expect(stored).not.toContain(`binaries${exe}`);
    expect(stored.some((p) => /\/libc\.so\.6$/.test(p)), stored.join(', ')).toBe(true);
    expectTargetRunning();
  });
});
