// A result that leaves something for the person to do says what, in a line they can run.
import { describe, expect, it } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import type { RestoreResult } from '../../src/pipelines/restore/index.js';
import { renderDumpResult, renderRestoreResult } from '../../src/ui/render.js';

const restore = (over: Partial<RestoreResult>): RestoreResult => ({
  state: 'restored', bundle: 'b.tar.zst', pid: 4242, pidInNamespace: 4242, threads: 4, finalState: 'running',
  processes: [{ pid: 4242, left: 'running' }], newPidns: false, signedBy: '/etc/procsnap/trusted-keys/team.key.pub',
  signature: { state: 'verified', keyFile: '/etc/procsnap/trusted-keys/team.key.pub', fingerprint: 'SHA256:x' },
  states: [], warnings: [], durations: {}, ...over,
});

const dump = (left: ('running' | 'stopped')[], finalState: DumpResult['finalState'] = 'running'): DumpResult => ({
  bundle: 'b.tar.zst', bundleSize: 1, pid: 100, mode: 'short-freeze', originalState: 'running',
  normalization: { action: 'sigstop', conversionWindowUs: null, settleMs: 1, note: 'n' }, finalState, freezeWindowMs: 1,
  processes: left.map((l, i) => ({ pid: 100 + i, ppid: 1, comm: 'w', threads: 1, found: 'running', left: l }) as DumpResult['processes'][number]),
  criuOptions: [], steps: [], warnings: [], artifacts: [],
});

const nextLines = (text: string) => text.split('\n').filter((l) => l.startsWith('next'));

describe('next-step lines', () => {
  it('a restore left running in place needs nothing', () => {
    expect(nextLines(renderRestoreResult(restore({})))).toEqual([]);
  });

  it('a restore left stopped names the pids to resume', () => {
    const r = restore({ finalState: 'stopped', processes: [{ pid: 4250, left: 'stopped' }, { pid: 4242, left: 'stopped' }] });
    expect(nextLines(renderRestoreResult(r))).toEqual(['next          stopped as asked or as captured: `kill -CONT 4250 4242` runs them']);
  });

  it('a copy in a new pid namespace says how to end it', () => {
    const r = restore({ newPidns: true, pid: 9001 });
    expect(nextLines(renderRestoreResult(r))).toEqual(['next          a copy in a pid namespace of its own: `kill 9001` ends it, and its namespace with it']);
  });

  it('a dump that left processes stopped names them; one left running, or killed, needs nothing', () => {
    expect(nextLines(renderDumpResult(dump(['stopped', 'running'])))).toEqual(['next          it is left stopped: `kill -CONT 100` resumes it']);
    expect(nextLines(renderDumpResult(dump(['running'])))).toEqual([]);
    expect(nextLines(renderDumpResult(dump(['stopped'], 'killed')))).toEqual([]);
  });
});
