// parseVersion/compareVersions: the minimum-version checks on criu and gdb depend on them.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { compareVersions, parseVersion } from '../../src/tools/locate.js';
import { MIN_CRIU } from '../../src/tools/criu.js';
import { MIN_GDB } from '../../src/tools/gdb.js';
import { repoRoot } from '../helpers/paths.js';

describe('parseVersion', () => {
  it('reads major.minor.patch from criu --version output', () => {
    expect(parseVersion('Version: 4.1.1')).toEqual({ major: 4, minor: 1, patch: 1, text: '4.1.1' });
  });

  it('defaults a missing patch to 0', () => {
    expect(parseVersion('GNU gdb 13.1')).toEqual({ major: 13, minor: 1, patch: 0, text: '13.1' });
  });

  it('takes the first dotted number in the text', () => {
    expect(parseVersion('criu 3.17.1 (gitid v3.17.1)')?.text).toBe('3.17.1');
  });

  it('returns undefined when there is no dotted number', () => {
    expect(parseVersion('Version: unknown')).toBeUndefined();
    expect(parseVersion('42')).toBeUndefined();
  });
});

describe('compareVersions', () => {
  const v = (text: string) => parseVersion(text)!;

  it('orders by major, then minor, then patch', () => {
    expect(compareVersions(v('4.0'), v('3.17.1'))).toBeGreaterThan(0);
    expect(compareVersions(v('4.1.1'), v('4.1.0'))).toBeGreaterThan(0);
    expect(compareVersions(v('4.1'), v('4.10'))).toBeLessThan(0);
    expect(compareVersions(v('9.0'), v('13.1'))).toBeLessThan(0);
  });

  it('says 0 for equal versions, whatever the text', () => {
    expect(compareVersions(v('4.0'), v('4.0.0'))).toBe(0);
  });

  it('puts Debian 12 criu and criu 4.1 (no AF_INET dumps on recent kernels) below the minimum, and 4.2 at it', () => {
    expect(compareVersions(v('Version: 3.17.1'), MIN_CRIU)).toBeLessThan(0);
    expect(compareVersions(v('Version: 4.1.1'), MIN_CRIU)).toBeLessThan(0);
    expect(compareVersions(v('Version: 4.2'), MIN_CRIU)).toBe(0);
  });

  it('is the minimum scripts/setup.sh installs: setup reads it from the source', () => {
    const r = spawnSync('bash', ['-c', 'source <(sed -n "/^# ---* CRIU minimum/,/^# ---* end CRIU minimum/p" scripts/setup.sh) && echo "$CRIU_MIN_MAJOR.$CRIU_MIN_MINOR"'], { cwd: repoRoot, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(MIN_CRIU.text);
  });

  it('puts gdb 8.1 below the minimum and gdb 13.1 above it', () => {
    expect(compareVersions(v('8.1'), MIN_GDB)).toBeLessThan(0);
    expect(compareVersions(v('13.1'), MIN_GDB)).toBeGreaterThan(0);
  });
});
