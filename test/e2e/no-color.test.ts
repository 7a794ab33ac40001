// NO_COLOR=1 (and --no-color): on a terminal, no escape sequence at all, no colour and no redrawn task list, from
// dump, inspect, verify and doctor. Run under a pseudo-terminal (script(1)), as a person's shell would run them.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { snapEntry } from '../helpers/cli.js';
import { nodeBin } from '../helpers/paths.js';
import { cleanupAllTargets, startTarget, type Target } from '../helpers/target.js';

let dir: string;
let target: Target;
let bundle: string;

/** snap ARGS on a pseudo-terminal, stdout and stderr both on it, as bytes. */
function onTerminal(args: string[], env: Record<string, string>): { status: number | null; output: string } {
  const command = [nodeBin, snapEntry, ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(' ');
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NO_COLOR' && k !== 'FORCE_COLOR' && k !== 'CI'));
  const r = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'latin1', env: { ...clean, TERM: 'xterm-256color', PROCSNAP_JOURNAL_DIR: join(dir, 'journal'), ...env }, timeout: 120_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

beforeAll(async () => {
  dir = makeTempDir('snap-no-color-');
  target = await startTarget({ threads: 2, mib: 4, group: 'setsid' });
  bundle = join(dir, 'b.snap.tar.zst');
  const dump = onTerminal(['dump', String(target.pid), '-o', bundle], { NO_COLOR: '1' });
  expect(dump.status, dump.output).toBe(0);
  expect(dump.output.includes('\x1b'), 'dump printed an escape').toBe(false);
}, 90_000);
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

describe('NO_COLOR on a terminal', () => {
  it('verify colours its verdict on a terminal by default: the check below can see an escape', () => {
    const r = onTerminal(['verify', bundle], {});
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain('\x1b[');
  });

  it.each([
    ['verify', (b: string) => ['verify', b]],
    ['inspect', (b: string) => ['inspect', b]],
    ['doctor', () => ['doctor', '--no-canary']],
  ])('%s with NO_COLOR=1 and with --no-color prints no ESC byte', (_name, args) => {
    for (const [extra, env] of [[[], { NO_COLOR: '1' }], [['--no-color'], {}]] as const) {
      const r = onTerminal([...args(bundle), ...extra], env);
      expect(r.output.length, r.output).toBeGreaterThan(0);
      expect(r.output.includes('\x1b'), `${args(bundle).join(' ')} ${extra.join(' ')}: ${JSON.stringify(r.output.slice(0, 300))}`).toBe(false);
    }
  });
});
