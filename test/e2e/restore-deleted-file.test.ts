// A file the process had open after it was deleted is carried in criu's own images (a ghost) and restored from them:
// a new file that has since taken its path is not it, and must not make restore refuse (it compared the new file's
// size with the deleted one's, and refused a restore criu would have done).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchFor } from '../helpers/scratch.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, processExists, waitFor } from '../helpers/target.js';

const { dir, pids, env } = scratchFor('snap-deleted-file-');

// Opens the file, writes 1000 bytes, deletes it, says which fd holds it, then sleeps holding it.
const SCRIPT = [
  'import os, sys, time',
  'path, out = sys.argv[1], sys.argv[2]',
  "fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600); os.write(fd, b'x' * 1000); os.unlink(path)",
  "open(out + '.tmp', 'w').write(str(fd)); os.rename(out + '.tmp', out)",
  'while True: time.sleep(0.05)',
].join('\n');

describe('a process holding a deleted file, whose path a new file has taken since', () => {
  it('restores: the process gets back its own deleted 1000-byte file, the new file at the path is left as it is', async () => {
    const path = join(dir, 'data');
    const fdFile = join(dir, 'fd');
    const holder = spawn('/usr/bin/python3', ['-c', SCRIPT, path, fdFile], { detached: true, stdio: 'ignore' });
    pids.push(holder.pid!);
    await waitFor(() => existsSync(fdFile), { what: 'the process to open and delete its file' });
    const fd = Number(readFileSync(fdFile, 'utf8'));
    const bundle = join(dir, 'b.tar.zst');
    const dump = await runSnap(['dump', String(holder.pid), '-o', bundle, '--quiet'], { env: env() });
    expect(dump.exitCode, dump.stderr).toBe(0);
    await killPid(holder.pid!);
    writeFileSync(path, ''); // another file, 0 bytes, now at the deleted one's path
    const run = await runSnap(['restore', bundle, '--allow-unsigned', '--json'], { env: env() });
    expect(run.exitCode, run.stderr).toBe(0);
    const pid = (JSON.parse(run.stdout) as { pid: number }).pid;
    pids.push(pid);
    expect(processExists(pid)).toBe(true);
    // criu brings a ghost back under a temporary name it then deletes: still a deleted file, its own.
    expect(readlinkSync(`/proc/${pid}/fd/${fd}`)).toMatch(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\.cr_link)? \\(deleted\\)$`));
    expect(statSync(`/proc/${pid}/fd/${fd}`).size).toBe(1000);
    expect(statSync(path).size).toBe(0);
  });
});
