// A /proc file of the target that exists but cannot be read (hidepid, an LSM, a mount over it) must not read as
// "nothing": `snap dump` refuses with exit 4, one line naming the file and the errno, before any signal; the target
// keeps running, and no bundle and no journal are left. Each case mounts over one file in a private mount namespace,
// so only the snap run inside it sees the change.
//
// A mount cannot put a directory over a file or a file over a directory (mount(2) says ENOTDIR), so EISDIR and
// ENOTDIR are covered by the unit tests; here the sources are files that fail on read even for root: a write-only
// sysctl (EACCES) and a process's mem read at offset 0 (EIO), and a mode-000 directory for a snap without the
// capabilities that override file modes (EACCES on a directory).
import { chmodSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runProgram, snapEntry, type SnapResult } from '../helpers/cli.js';
import { nodeBin } from '../helpers/paths.js';
import { cleanupAllTargets, startTarget, type Target } from '../helpers/target.js';

let target: Target;
let journalDir: string;

beforeAll(async () => {
  target = await startTarget({ threads: 3, mib: 8, group: 'setsid' });
  journalDir = makeTempDir('snap-test-journal-');
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** Runs `snap dump` in a private mount namespace after `mount --bind source over`; `wrap` goes before node (setpriv). */
async function dumpWithMount(source: string, over: string, out: string, wrap: string[] = []): Promise<SnapResult> {
  const snap = [...wrap, nodeBin, snapEntry, 'dump', String(target.pid), '-o', join(out, 'x.tar.zst')].map(quote).join(' ');
  const script = `mount --bind ${quote(source)} ${quote(over)} && exec ${snap}`;
  return runProgram('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
}

interface Case {
  name: string;
  /** The file mounted over, under /proc/PID. */
  file: (pid: number) => string;
  source: (pid: number) => string;
  code: 'EACCES' | 'EIO';
  wrap?: string[];
}

const writeOnlySysctl = () => '/proc/sys/vm/drop_caches';

const cases: Case[] = [
  // Read by the target's description, first of what the preflight reads of the tree.
  { name: 'environ (EACCES)', file: (pid) => `/proc/${pid}/environ`, source: writeOnlySysctl, code: 'EACCES' },
  // The root's children: without them the tree would be the root alone.
  { name: 'the children of the main thread (EACCES)', file: (pid) => `/proc/${pid}/task/${pid}/children`, source: writeOnlySysctl, code: 'EACCES' },
  // Read last, after the tree and its facts: the refusal still comes before any signal.
  { name: 'smaps (EIO)', file: (pid) => `/proc/${pid}/smaps`, source: (pid) => `/proc/${pid}/mem`, code: 'EIO' },
  {
    name: 'the fd directory (EACCES on a directory)',
    file: (pid) => `/proc/${pid}/fd`,
    source: () => {
      const dir = makeTempDir('snap-test-noaccess-');
      chmodSync(dir, 0o000);
      return dir;
    },
    code: 'EACCES',
    // Root reads a mode-000 directory through these two capabilities; without them it is as hidden as hidepid makes it.
    wrap: ['/usr/bin/setpriv', '--bounding-set=-dac_override,-dac_read_search', '--'],
  },
];

describe('a /proc file of the target that cannot be read', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s: exit 4 naming the file, target never stopped, nothing left', async (_name, c) => {
    const out = makeTempDir('snap-test-out-');
    const file = c.file(target.pid);
    const ticksBefore = target.readProgress().ticks;

    // Watch the target the whole time snap runs: not one sample may show a stopped or traced thread.
    const stoppedSeen: string[] = [];
    let samples = 0;
    const watch = setInterval(() => {
      const states = target.threadStates();
      samples++;
      if (states.includes('T') || states.includes('t')) stoppedSeen.push(states.join(''));
    }, 1);
    let run: SnapResult;
    try {
      run = await dumpWithMount(c.source(target.pid), file, out, c.wrap);
    } finally {
      clearInterval(watch);
    }

    expect(run.exitCode, run.stderr).toBe(EXIT_CODES.targetRefused.code);
    const errorLines = run.stderr.split('\n').filter((line) => line.startsWith('snap: error:'));
    expect(errorLines, run.stderr).toHaveLength(1);
    expect(errorLines[0]).toBe(
      `snap: error: cannot read ${file}: ${c.code} (${c.code === 'EIO' ? 'i/o error' : 'permission denied'}); ` +
        'snap refuses a tree it cannot see whole; check hidepid/LSM settings and mounts over /proc',
    );
    expect(run.stderr).not.toContain('    at ');
    expect(run.stdout).toBe('');

    expect(samples).toBeGreaterThan(0);
    expect(stoppedSeen).toEqual([]);
    expect(target.isAlive()).toBe(true);
    expect(target.threadStates()).toHaveLength(3);
    await target.waitUntilTicksAdvance(3);
    expect(target.readProgress().ticks).toBeGreaterThan(ticksBefore);

    expect(readdirSync(out)).toEqual([]); // no bundle, partial file or work directory
    expect(readdirSync(journalDir)).toEqual([]);
  });
});
