// A copy is not the original, for unix sockets too: a socket bound to a path is found through the file system, which
// an isolated copy shares with the host. The original's clients connecting to its path must keep reaching the
// original, during the copy's life and after it ends; inside the copy, the same path reaches the copy; and the copy
// cannot reach the host's other services through their socket files. Who answered is told by the kernel
// (SO_PEERCRED), not by the server, whose copy says the same words.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { waitFor } from '../helpers/target.js';

afterAll(removeTempDirs);

const SERVER = join(repoRoot, 'test', 'fixtures', 'unix_server.py');
const PEER = `import socket,struct,sys
s=socket.socket(socket.AF_UNIX)
try:
  s.connect(sys.argv[1])
except OSError as e:
  print('refused', e.errno); sys.exit(0)
print(struct.unpack('3i', s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])`;

/** The host pid of whoever accepted a connection to `path`, or 'refused ERRNO'; from the copy's namespaces if given. */
function peerOf(path: string, inCopy?: number): string {
  const python = ['/usr/bin/python3', '-c', PEER, path];
  const out = inCopy === undefined ? execFileSync(python[0]!, python.slice(1), { encoding: 'utf8' }) : execFileSync('nsenter', ['--target', String(inCopy), '--mount', '--net', '--', ...python], { encoding: 'utf8' });
  return out.trim();
}

async function startServer(args: string[], ready: string): Promise<{ child: ChildProcess; pid: number }> {
  const child = spawn('/usr/bin/python3', args, { detached: true, stdio: 'ignore' });
  const pid = await waitFor(() => {
    try {
      return Number(readFileSync(ready, 'utf8')) || undefined;
    } catch {
      return undefined;
    }
  }, { what: `${args[0]} to listen`, timeoutMs: 10_000 });
  return { child, pid };
}

describe('restore --isolate of a server listening on a unix socket path, beside the original', () => {
  it("the original's path keeps reaching the original, during the copy's life and after it; inside the copy it reaches the copy", async () => {
    const dir = makeTempDir('snap-isolate-unix-');
    const env = { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-isolate-unix-journal-') };
    const path = join(dir, 'app.sock');
    // A service of the host's, on a socket file of its own: the copy must not reach it.
    const hostPath = join(dir, 'host-service.sock');
    const host = await startServer([SERVER, hostPath], `${hostPath}.ready`);
    const server = spawn('/usr/bin/python3', [SERVER, path], { detached: true, stdio: 'ignore' });
    let copy: number | undefined;
    try {
      const pid = await waitFor(() => {
        try {
          return Number(readFileSync(`${path}.ready`, 'utf8')) || undefined;
        } catch {
          return undefined;
        }
      }, { what: 'the unix server to listen', timeoutMs: 10_000 });
      const inode = statSync(path).ino;
      expect(peerOf(path)).toBe(String(pid));
      const bundle = join(dir, 'b.tar.zst');
      const dump = await runSnap(['dump', String(pid), '-o', bundle], { env });
      expect(dump.exitCode, dump.stderr).toBe(0);

      const restore = await runSnap(['restore', bundle, '--allow-unsigned', '--isolate', '--json'], { env });
      expect(restore.exitCode, restore.stderr).toBe(0);
      copy = (JSON.parse(restore.stdout) as { pid: number }).pid;
      expect(copy).not.toBe(pid);
      expect(statSync(path).ino, "the original's socket file is still its own").toBe(inode);
      expect(peerOf(path), 'a host client reaches the original').toBe(String(pid));
      expect(peerOf(path, copy), 'inside the copy, the path reaches the copy').toBe(String(copy));
      expect(peerOf(hostPath, copy), "the host's service is out of the copy's reach").toBe('refused 111');
      expect(peerOf(hostPath), 'and still there for the host').toBe(String(host.pid));

      const end = await runSnap(['copies', '--end', String(copy)], { env });
      expect(end.exitCode, end.stderr).toBe(0);
      copy = undefined;
      expect(peerOf(path), `the copy gone, the original still answers on its path (original: ${readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2]}, socket inode now ${statSync(path).ino}, was ${inode})`).toBe(String(pid));
    } finally {
      if (copy !== undefined) await runSnap(['copies', '--end', String(copy)], { env });
      server.kill('SIGKILL');
      host.child.kill('SIGKILL');
    }
  });

  it('a datagram socket connected to a host socket outside the tree (as to /dev/log) is connected again, and the restore says so', async () => {
    const dir = makeTempDir('snap-isolate-unix-dgram-');
    const env = { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-isolate-unix-journal-') };
    const logPath = join(dir, 'log.sock');
    // The host's log service: a bound datagram socket, read by no one (what arrives waits in its queue).
    const log = spawn('/usr/bin/python3', ['-c', `import socket,sys,time\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nopen(sys.argv[1]+'.ready','w').write('1')\ntime.sleep(600)`, logPath], { detached: true, stdio: 'ignore' });
    const own = join(dir, 'app.sock');
    let copy: number | undefined;
    let app: { child: ChildProcess; pid: number } | undefined;
    try {
      await waitFor(() => existsSync(`${logPath}.ready`), { what: 'the log socket', timeoutMs: 10_000 });
      app = await startServer([SERVER, own, logPath], `${own}.ready`);
      const bundle = join(dir, 'b.tar.zst');
      const dump = await runSnap(['dump', String(app.pid), '-o', bundle, '--json'], { env });
      expect(dump.exitCode, dump.stderr).toBe(0);
      expect((JSON.parse(dump.stdout) as { criuOptions: { option: string }[] }).criuOptions.map((o) => o.option)).toContain('--ext-unix-sk');
      const restore = await runSnap(['restore', bundle, '--allow-unsigned', '--isolate', '--json'], { env });
      expect(restore.exitCode, restore.stderr).toBe(0);
      copy = (JSON.parse(restore.stdout) as { pid: number }).pid;
      expect(restore.stderr).toContain(`the copy is connected to ${logPath} on the host again, as the original was`);
      expect(peerOf(own, copy)).toBe(String(copy));
      expect(peerOf(own)).toBe(String(app.pid));
    } finally {
      if (copy !== undefined) await runSnap(['copies', '--end', String(copy)], { env });
      app?.child.kill('SIGKILL');
      log.kill('SIGKILL');
    }
  });

  it('a restore in place while another process listens on the path is refused with exit 12 naming the path and its holder; that process keeps its clients', async () => {
    const dir = makeTempDir('snap-isolate-unix-held-');
    const env = { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-isolate-unix-journal-') };
    const path = join(dir, 'app.sock');
    const first = await startServer([SERVER, path], `${path}.ready`);
    let second: { child: ChildProcess; pid: number } | undefined;
    try {
      const bundle = join(dir, 'b.tar.zst');
      const dump = await runSnap(['dump', String(first.pid), '-o', bundle, '--leave', 'killed'], { env });
      expect(dump.exitCode, dump.stderr).toBe(0);
      await waitFor(() => first.child.exitCode !== null || first.child.signalCode !== null, { what: 'the original to end' });
      rmSync(`${path}.ready`);
      second = await startServer([SERVER, path], `${path}.ready`);
      const restore = await runSnap(['restore', bundle, '--allow-unsigned'], { env });
      expect(restore.exitCode, restore.stderr).toBe(12);
      expect(restore.stderr).toContain(`unix socket ${path} (by process ${second.pid} (python3)) is held on this host`);
      expect(peerOf(path)).toBe(String(second.pid));
    } finally {
      first.child.kill('SIGKILL');
      second?.child.kill('SIGKILL');
    }
  });
});
