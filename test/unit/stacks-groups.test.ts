// stacks.txt shows the processes whose stacks are the same once, with their count and pids: what makes two stacks
// the same (names, states and frames thread by thread; not tids, not the pcs of named frames) and how pids are listed.
import { describe, expect, it } from 'vitest';
import type { ProcessStacks } from '../../src/analysis/stacks-model.js';
import { compactPids, identicalStacks, renderStacks } from '../../src/analysis/stacks-render.js';

const frame = (pc: string, fn: string | null, line: number | null = 10) => ({ pc, function: fn, file: fn ? 'w.c' : null, line: fn ? line : null, library: null });
const proc = (pid: number, pcBase = 0x1000, fn = 'wait_here', extra: Partial<ProcessStacks> = {}): ProcessStacks => ({
  pid,
  comm: 'worker',
  exe: '/usr/sbin/worker',
  threads: [
    { tid: pid, frames: [frame(`0x${(pcBase + 1).toString(16)}`, fn), frame(`0x${(pcBase + 2).toString(16)}`, 'main')] },
    { tid: pid + 1, frames: [frame(`0x${(pcBase + 3).toString(16)}`, 'poll_loop')] },
  ],
  ...extra,
});

describe('identical stacks', () => {
  it('workers in the same frames are one group, whatever their tids and pcs; another function or line is another', () => {
    const groups = identicalStacks([proc(100), proc(101), proc(102, 0x9000), proc(103, 0x1000, 'other'), proc(104)]);
    expect(groups.map((g) => g.map((p) => p.pid))).toEqual([[100, 101, 102, 104], [103]]);
    const lineMoved = proc(105);
    lineMoved.threads[1]!.frames[0]!.line = 11;
    expect(identicalStacks([proc(100), lineMoved])).toHaveLength(2);
  });

  it('a frame gdb could not name is compared by its pc', () => {
    const a = proc(100);
    const b = proc(101);
    a.threads[0]!.frames.push(frame('0xdead', null));
    b.threads[0]!.frames.push(frame('0xbeef', null));
    expect(identicalStacks([a, b])).toHaveLength(2);
  });

  it('thread names and language frames count', () => {
    const named = proc(101);
    named.threads[1]!.name = 'napper';
    expect(identicalStacks([proc(100), named])).toHaveLength(2);
  });

  it('pids as ranges: "100-102, 104, 200"', () => {
    expect(compactPids([104, 100, 200, 101, 102])).toBe('100-102, 104, 200');
    expect(compactPids([7])).toBe('7');
  });

  it('stacks.txt: a group once, with its count and pids; a process alone as before; a pc the group does not share left out', () => {
    const text = renderStacks([proc(1), proc(100), proc(101), proc(102, 0x9000), proc(50, 0x1000, 'other')]);
    expect(text).toContain('4 processes: 1, 100-102 (worker), 2 threads each, /usr/sbin/worker');
    expect(text).toContain('process 50 (worker), 2 threads, /usr/sbin/worker');
    expect(text.match(/in poll_loop|poll_loop \(\)/g)).toHaveLength(2);
    expect(text).toContain('  thread 1 of each (the main thread):\n    #0  wait_here () at w.c:10');
    expect(text).toContain('  thread 50:\n    #0  0x1001 in other () at w.c:10');
  });
});
