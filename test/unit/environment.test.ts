// The configuration variables: PROCSNAP_* is read first, the SNAP_* of earlier versions still works and is warned
// about once per variable per process.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, configValue, readConfig, resetDeprecationWarnings, setDeprecationWriter } from '../../src/environment.js';

describe('configuration variables', () => {
  let lines: string[];
  let previous: (line: string) => void;
  beforeEach(() => {
    lines = [];
    resetDeprecationWarnings();
    previous = setDeprecationWriter((l) => lines.push(l));
  });
  afterEach(() => {
    setDeprecationWriter(previous);
    resetDeprecationWarnings();
  });

  it('reads PROCSNAP_NAME and says where the value came from, without a warning', () => {
    expect(readConfig('CRIU', { PROCSNAP_CRIU: '/opt/criu' })).toEqual({ value: '/opt/criu', from: 'PROCSNAP_CRIU' });
    expect(lines).toEqual([]);
  });

  it('prefers PROCSNAP_NAME over SNAP_NAME when both are set, and does not warn', () => {
    expect(configValue('GDB', { PROCSNAP_GDB: '/new/gdb', SNAP_GDB: '/old/gdb' })).toBe('/new/gdb');
    expect(lines).toEqual([]);
  });

  it('still reads SNAP_NAME, warning once per variable with the name to use instead', () => {
    const env = { SNAP_JOURNAL_DIR: '/old/journal', SNAP_ZSTD: 'none' };
    expect(readConfig('JOURNAL_DIR', env)).toEqual({ value: '/old/journal', from: 'SNAP_JOURNAL_DIR' });
    expect(configValue('JOURNAL_DIR', env)).toBe('/old/journal');
    expect(configValue('ZSTD', env)).toBe('none');
    expect(configValue('ZSTD', env)).toBe('none');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/warning: SNAP_JOURNAL_DIR is deprecated .*rename it PROCSNAP_JOURNAL_DIR$/);
    expect(lines[1]).toMatch(/warning: SNAP_ZSTD is deprecated .*rename it PROCSNAP_ZSTD$/);
    expect(lines.every((l) => !l.includes('\n'))).toBe(true);
  });

  it('treats an empty value as unset, for either name', () => {
    expect(configValue('LOG_DIR', { PROCSNAP_LOG_DIR: '', SNAP_LOG_DIR: '' })).toBeUndefined();
    expect(configValue('LOG_DIR', { PROCSNAP_LOG_DIR: '', SNAP_LOG_DIR: '/old/logs' })).toBe('/old/logs');
    expect(configValue('TRUSTED_KEYS', {})).toBeUndefined();
    expect(lines).toHaveLength(1);
  });

  it('never reads snapd variables that share the prefix', () => {
    const snapd = { SNAP: '/snap/x/1', SNAP_DATA: '/var/snap/x/1', SNAP_NAME: 'x', SNAP_REVISION: '1', SNAP_COMMON: '/var/snap/x/common' };
    for (const name of CONFIG_VARIABLES) expect(configValue(name, snapd)).toBeUndefined();
    expect(lines).toEqual([]);
  });
});
