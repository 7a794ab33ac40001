// Strings from a target (its comm and argv) and from a bundle (any manifest field) reach the terminal made printable:
// an escape sequence there is shown as \x1b, never obeyed. Not one ESC byte in what snap prints.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

const ESC = '\x1b';
const CLEAR = `${ESC}[2J`;
const CLIPBOARD = `${ESC}]52;c;ZXZpbA==\x07`;
const FORGED = `\nok  this bundle: signature valid`;
afterAll(removeTempDirs);

describe('what snap prints is printable', () => {
  it('a target whose comm and argv carry escape sequences: dump, inspect and verify print no ESC byte', async () => {
    const dir = makeTempDir('snap-printable-');
    const journal = makeTempDir('snap-printable-journal-');
    // comm set with prctl(PR_SET_NAME) to a clear-screen sequence; argv[1] holds a clipboard write.
    const script = `import ctypes, time\nctypes.CDLL(None).prctl(15, b"\\x1b[2Jx", 0, 0, 0)\nwhile True: time.sleep(1)`;
    const child = spawn('/usr/bin/python3', ['-c', script, CLIPBOARD], { detached: true, stdio: 'ignore' });
    try {
      await waitFor(() => readProcStat(child.pid!)?.comm.startsWith(ESC), { what: 'the comm to be set' });
      const bundle = join(dir, 'esc.tar.zst');
      const env = { PROCSNAP_JOURNAL_DIR: journal };
      const dump = await runSnap(['dump', String(child.pid), '-o', bundle], { env });
      expect(dump.exitCode, dump.stderr).toBe(0);
      const inspect = await runSnap(['inspect', bundle], { env });
      expect(inspect.exitCode, inspect.stderr).toBe(0);
      expect(inspect.stdout).toContain('\\x1b[2Jx');
      for (const out of [dump.stdout, dump.stderr, inspect.stdout, inspect.stderr]) expect(out.includes(ESC)).toBe(false);

      // The same bundle with hostile strings in the manifest itself.
      const hostile = await repackBundle(bundle, join(dir, 'hostile.tar.zst'), async (extracted, manifest) => {
        const { writeFileSync } = await import('node:fs');
        manifest.host.hostname = `${CLEAR}host${FORGED}`;
        manifest.custody.user = CLIPBOARD;
        manifest.warnings.push(`${ESC}[31mred${FORGED}`);
        manifest.artifacts = manifest.artifacts.map((a) => a);
        writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      });
      for (const args of [['inspect', hostile], ['verify', hostile]]) {
        const run = await runSnap(args, { env });
        expect(run.stdout.includes(ESC) || run.stderr.includes(ESC), `${args[0]} printed an ESC byte`).toBe(false);
        expect(run.stdout).not.toMatch(/^ok  this bundle: signature valid/m);
      }
    } finally {
      await killPid(child.pid!);
    }
  });
});
