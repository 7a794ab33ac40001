// What setup installs for the tests (nginx, redis, PostgreSQL) must not start at boot: their postinst enables their
// units, and setup disables every unit of a package it installed, leaving the units of other packages alone. Run on a
// copy of the unit links under a root of its own (systemctl --root), never on this host's.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/paths.js';

const UNITS = ['nginx.service', 'redis-server.service', 'e2scrub_reap.service'];
const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A root whose multi-user.target wants each unit (as a postinst leaves it), pointing at the host's unit files. */
function rootWanting(units: string[]): string {
  const root = mkdtempSync(join(tmpdir(), 'snap-test-units-'));
  roots.push(root);
  const wants = join(root, 'etc', 'systemd', 'system', 'multi-user.target.wants');
  mkdirSync(wants, { recursive: true });
  mkdirSync(join(root, 'lib', 'systemd', 'system'), { recursive: true });
  // Copies of the host's unit files, as the packages install them.
  for (const u of UNITS) copyFileSync(`/lib/systemd/system/${u}`, join(root, 'lib', 'systemd', 'system', u));
  for (const u of units) symlinkSync(`/lib/systemd/system/${u}`, join(wants, u));
  return root;
}

function disableUnits(root: string, packages: string[]): { status: number | null; stderr: string } {
  const script = [
    'log() { printf "setup: %s\\n" "$*" >&2; }',
    'source <(sed -n "/^# ---* boot-time units/,/^# ---* end boot-time units/p" scripts/setup.sh)',
    'disable_units "$@"',
  ].join('\n');
  return spawnSync('bash', ['-c', script, 'test', root, ...packages], { cwd: repoRoot, encoding: 'utf8' });
}

const wanted = (root: string, unit: string) => !!lstatSync(join(root, 'etc', 'systemd', 'system', 'multi-user.target.wants', unit), { throwIfNoEntry: false });

describe('setup: units of the service packages it installed', () => {
  const haveUnits = UNITS.every((u) => existsSync(`/lib/systemd/system/${u}`));

  it.runIf(haveUnits)('nginx and redis installed by setup are disabled; a unit of another package stays enabled', () => {
    const root = rootWanting(['nginx.service', 'redis-server.service', 'e2scrub_reap.service']);
    const r = disableUnits(root, ['nginx-common', 'redis-server']);
    expect(r.status, r.stderr).toBe(0);
    expect(wanted(root, 'nginx.service')).toBe(false);
    expect(wanted(root, 'redis-server.service')).toBe(false);
    expect(wanted(root, 'e2scrub_reap.service')).toBe(true);
    expect(r.stderr).toContain('setup: nginx.service: not started at boot');
    expect(r.stderr).toContain('setup: redis-server.service: not started at boot');
  });

  it.runIf(haveUnits)('a unit already disabled is left as it is, and nothing is said', () => {
    const root = rootWanting([]);
    const r = disableUnits(root, ['nginx-common']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  });
});
