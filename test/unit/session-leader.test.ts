// sessionLeaderHidden: reading /proc/PID/status NSsid, whose last id is the one the task itself sees.
import { describe, expect, it } from 'vitest';
import { sessionLeaderHidden } from '../../src/process/access.js';

describe('sessionLeaderHidden', () => {
  it('a session visible in the only namespace', () => {
    expect(sessionLeaderHidden('15295')).toBe(false);
  });
  it('a leader outside the task namespace: the innermost id is 0', () => {
    expect(sessionLeaderHidden('812\t0')).toBe(true);
    expect(sessionLeaderHidden('0')).toBe(true);
  });
  it('an outer 0 with a visible inner session is fine (only what the task sees counts)', () => {
    expect(sessionLeaderHidden('0 1')).toBe(false);
  });
  it('a kernel without the field: not refused here', () => {
    expect(sessionLeaderHidden(undefined)).toBe(false);
  });
});
