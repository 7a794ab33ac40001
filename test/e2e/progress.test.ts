// Long byte-bound steps say how far they are: the seal, verify and (in restore.test.ts) the extraction print bytes
// done of the total, with a rate and the time left, on a terminal and as plain lines in logs.
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, snapEntry } from '../helpers/cli.js';
import { nodeBin } from '../helpers/paths.js';
import { cleanupAllTargets, startTarget, type Target } from '../helpers/target.js';

const MiB = 1024 * 1024;
let dir: string;
let target: Target;
let bundle: string;
let dumpStderr: string;

/** "412.0 MiB" -> bytes (to the precision printed). */
function bytesOf(n: string, unit: string): number {
  return Number(n) * { B: 1, KiB: 1024, MiB, GiB: 1024 * MiB }[unit as 'B']!;
}

beforeAll(async () => {
  dir = makeTempDir('snap-progress-');
  target = await startTarget({ threads: 2, mib: 64, group: 'setsid' });
  bundle = join(dir, 'b.tar.zst');
  const run = await runSnap(['dump', String(target.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(run.exitCode, run.stderr).toBe(0);
  dumpStderr = run.stderr;
}, 120_000);
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

describe('progress of the byte-bound steps', () => {
  it('the seal says how much of the bundle is written, of a total that holds the 64 MiB of memory', () => {
    const lines = dumpStderr.split('\n');
    const seal = lines.findIndex((l) => /\[start\] Seal the bundle/.test(l));
    expect(seal, dumpStderr).toBeGreaterThan(0);
    const meter = lines.slice(seal).map((l) => /written into the bundle: ([\d.]+) (B|KiB|MiB|GiB) of ([\d.]+) (B|KiB|MiB|GiB) \((\d+)%\)/.exec(l)).find(Boolean);
    expect(meter, dumpStderr).toBeTruthy();
    const [, done, doneUnit, total, totalUnit, percent] = meter!;
    expect(bytesOf(total!, totalUnit!)).toBeGreaterThanOrEqual(64 * MiB);
    expect(bytesOf(done!, doneUnit!)).toBeLessThanOrEqual(bytesOf(total!, totalUnit!));
    expect(Number(percent)).toBeLessThanOrEqual(100);
  });

  it('verify ends its step with every byte of the file read, in plain lines and on a terminal', async () => {
    const size = statSync(bundle).size;
    const plain = await runSnap(['verify', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(plain.exitCode, plain.stderr).toBe(0);
    const m = /(\d+) artifacts, ([\d.]+) (MiB|KiB) of ([\d.]+) (MiB|KiB) \(100%\)/.exec(plain.stderr);
    expect(m, plain.stderr).toBeTruthy();
    expect(Math.abs(bytesOf(m![4]!, m![5]!) - size)).toBeLessThan(0.1 * MiB);
    expect(m![2]).toBe(m![4]);
    const quiet = await runSnap(['verify', bundle, '-q'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(quiet.stderr).toBe('');
    // On a terminal the line is the task list's, redrawn in place.
    const command = [nodeBin, snapEntry, 'verify', bundle].map((a) => `'${a}'`).join(' ');
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NO_COLOR' && k !== 'CI'));
    const tty = spawnSync('script', ['-qec', `stty cols 160 rows 40; ${command}`, '/dev/null'], { encoding: 'utf8', env: { ...clean, TERM: 'xterm-256color', PROCSNAP_JOURNAL_DIR: join(dir, 'journal') }, timeout: 60_000 });
    expect(tty.status, tty.stdout).toBe(0);
    expect(tty.stdout).toMatch(/artifacts, [\d.]+ (MiB|KiB) of [\d.]+ (MiB|KiB) \(100%\)/);
  });
});
