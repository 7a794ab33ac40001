import { describe, expect, it } from 'vitest';
import { ByteMeter, describeBytes } from '../../src/pipelines/byte-meter.js';

const MiB = 1024 * 1024;

describe('describeBytes', () => {
  it('says bytes done of the total, the share, the rate and the time left', () => {
    expect(describeBytes(512 * MiB, 2048 * MiB, 4000)).toBe('512.0 MiB of 2.0 GiB (25%), 128.0 MiB/s, 12 s left');
  });

  it('gives minutes past a minute, and never "0 s left" before the end', () => {
    expect(describeBytes(10 * MiB, 1034 * MiB, 1000)).toBe('10.0 MiB of 1.0 GiB (0%), 10.0 MiB/s, 1 min 42 s left');
    expect(describeBytes(2048 * MiB - 1, 2048 * MiB, 1000)).toMatch(/, 1 s left$/);
  });

  it('has no rate in the first instant, and no time left without a total or once done', () => {
    expect(describeBytes(MiB, 8 * MiB, 50)).toBe('1.0 MiB of 8.0 MiB (12%)');
    expect(describeBytes(64 * MiB, undefined, 1000)).toBe('64.0 MiB, 64.0 MiB/s');
    expect(describeBytes(8 * MiB, 8 * MiB, 1000)).toBe('8.0 MiB of 8.0 MiB (100%), 8.0 MiB/s');
  });
});

describe('ByteMeter', () => {
  it('speaks at most once per interval, stays silent until given somewhere to speak, and grows its total', () => {
    const lines: string[] = [];
    const meter = new ByteMeter(undefined, 100, 60_000, 'written: ');
    meter.update(10);
    expect(lines).toEqual([]);
    meter.speakTo((l) => lines.push(l));
    expect(lines).toEqual([expect.stringMatching(/^written: 10 B of 100 B \(10%\)/)]);
    meter.update(50);
    expect(lines).toHaveLength(1); // within the interval
    meter.addTotal(100);
    expect(meter.line()).toMatch(/^written: 50 B of 200 B \(25%\)/);
    const every = new ByteMeter((l) => lines.push(l), undefined, 0);
    every.update(1, 4);
    every.update(2);
    expect(lines.slice(1)).toEqual([expect.stringMatching(/^1 B of 4 B \(25%\)/), expect.stringMatching(/^2 B of 4 B \(50%\)/)]);
  });
});
