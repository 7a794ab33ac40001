// snap refuses, with the reason, a target the invoking user could not trace, before touching it or writing anything.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/errors.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { snapEntry } from '../helpers/cli.js';
import { nodeBin } from '../helpers/paths.js';
import { cleanupAllTargets, startTarget } from '../helpers/target.js';

afterEach(cleanupAllTargets);
afterAll(removeTempDirs);

/** Runs snap as uid/gid 65534 (nobody) with no capabilities at all. */
function runAsNobody(args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    '/usr/bin/setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--', nodeBin, snapEntry, ...args],
    { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NO_COLOR: '1', HOME: cwd }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('privilege', () => {
  it('a user without the capabilities criu needs is refused with the reason, and the target is untouched', async () => {
    const target = await startTarget({ threads: 2, mib: 8, group: 'setsid' });
    const out = makeTempDir('snap-test-priv-');
    const run = await runAsNobody(['dump', String(target.pid), '-o', join(out, 'x.tar.zst')], '/');
    expect(run.code, run.stderr).toBe(EXIT_CODES.permission.code);
    const lines = run.stderr.trim().split('\n').filter((l) => l.startsWith('snap: error:'));
    expect(lines, run.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^snap: error: .*(CAP_SYS_ADMIN|CAP_CHECKPOINT_RESTORE|uid).*; run snap as root/);
    expect(run.stderr).not.toContain('    at ');
    expect(readdirSync(out)).toEqual([]);
    expect(target.threadStates().some((s) => s === 'T')).toBe(false);
    await target.waitUntilTicksAdvance(3);
  });
});
