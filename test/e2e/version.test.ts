// `snap --version` is answered before oclif is loaded; it must still say exactly what oclif would.
import { Config } from '@oclif/core';
import { describe, expect, it } from 'vitest';
import { repoRoot, runSnap } from '../helpers/cli.js';

describe('snap --version', () => {
  it("prints oclif's own version line (name/version platform-arch node-version), exit 0, nothing on stderr", async () => {
    const config = await Config.load(repoRoot);
    const run = await runSnap(['--version']);
    expect(run.exitCode).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(`${config.userAgent}\n`);
    expect(run.stdout).toMatch(/^procsnap\/\d+\.\d+\.\d+ linux-\w+ node-v\d+\.\d+\.\d+\n$/);
  });

  it('--version with anything after it goes to oclif as before', async () => {
    const run = await runSnap(['--version', '--help']);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toMatch(/procsnap\/\d+\.\d+\.\d+/);
  });
});
