// `snap --version` is answered before oclif is loaded; it must still say exactly what oclif would.
import { Config } from '@oclif/core';
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { repoRoot, runSnap, snapEntry } from '../helpers/cli.js';

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

// A Node.js older than 22 (Debian 12's own is 20) fails deep inside the CLI's libraries; snap says so in one line.
const olderNode = (() => {
  const r = spawnSync('/usr/bin/node', ['-p', 'process.versions.node'], { encoding: 'utf8' });
  return r.status === 0 && Number(r.stdout.split('.')[0]) < 22 ? r.stdout.trim() : undefined;
})();

describe.skipIf(!olderNode)(`snap on Node.js ${olderNode ?? '< 22'}`, () => {
  it('refuses in one line naming the version and what to do, exit 6, for --version and any command', () => {
    for (const args of [['--version'], ['doctor'], ['dump', '1']]) {
      const r = spawnSync('/usr/bin/node', [snapEntry, ...args], { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(6);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`snap: error: Node.js ${olderNode} is too old (need >= 22); run \`npm run setup\` (it installs Node 24 beside the code) or put a Node >= 22 first on PATH\n`);
    }
  });
});

describe.skipIf(process.getuid?.() !== 0)('procsnap on PATH after setup', () => {
  it('a new login shell runs `procsnap --version`, through /usr/local/bin', () => {
    const r = spawnSync('bash', ['-lc', 'command -v procsnap && procsnap --version'], { encoding: 'utf8', env: { HOME: process.env.HOME ?? '/root', TERM: 'dumb' } });
    expect(r.status, r.stderr).toBe(0);
    const [path, version] = r.stdout.trim().split('\n');
    expect(path).toBe('/usr/local/bin/procsnap');
    expect(version).toMatch(/^procsnap\/\d+\.\d+\.\d+ /);
    // A procsnap checkout's launcher: this one, unless another checkout's setup ran since.
    expect(readlinkSync('/usr/local/bin/procsnap')).toMatch(/\/bin\/snap$/);
  });
});
