// criu is started before the freeze and held at a gate: it runs only once the gate is opened, with its own command
// on record, and never if snap goes away first.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nodeBin, repoRoot } from '../helpers/paths.js';
import { startGatedTool } from '../../src/tools/run.js';

const dir = mkdtempSync(join(tmpdir(), 'snap-gate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a tool held at a gate', () => {
  it('does not run until opened; then runs as itself (same pid), its own command in the log and the record', async () => {
    const marker = join(dir, 'ran');
    const log = join(dir, 'tool.log');
    const tool = startGatedTool('/bin/sh', ['-c', `echo "pid $$" > ${marker}; echo said-so`], { logFile: log, dieWithSnap: false });
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(marker)).toBe(false);
    tool.open(10_000);
    const run = await tool.done;
    expect(run.exitCode).toBe(0);
    expect(readFileSync(marker, 'utf8').trim()).toBe(`pid ${tool.pid}`);
    expect(run.command).toEqual(['/bin/sh', '-c', `echo "pid $$" > ${marker}; echo said-so`]);
    const text = readFileSync(log, 'utf8');
    expect(text.split('\n')[0]).toMatch(/^\$ \/bin\/sh -c /);
    expect(text).not.toContain('read -r go');
    expect(text).toContain('said-so');
  });

  it('never runs when the process that started it exits before opening the gate', () => {
    const marker = join(dir, 'never');
    const script = `
      import { startGatedTool } from ${JSON.stringify(join(repoRoot, 'dist', 'tools', 'run.js'))}
      const t = startGatedTool('/usr/bin/touch', [${JSON.stringify(marker)}], { logFile: ${JSON.stringify(join(dir, 'never.log'))}, dieWithSnap: false })
      process.stdout.write(String(t.pid))
      process.exit(0)`;
    const r = spawnSync(nodeBin, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const pid = Number(r.stdout);
    expect(pid).toBeGreaterThan(0);
    // The gate's shell sees its stdin close and exits without running the tool.
    const deadline = Date.now() + 10_000;
    while (existsSync(`/proc/${pid}`) && Date.now() < deadline) spawnSync('sleep', ['0.05']);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(existsSync(marker)).toBe(false);
  });
});
