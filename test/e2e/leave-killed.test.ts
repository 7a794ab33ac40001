// `dump --leave killed` the way criu migrates a process: criu ends the tree at the end of its dump, its TCP
// connections still in repair mode and locked, so the peer sees neither a reset nor a close; what the peer sends
// meanwhile waits in its own retransmissions, and `snap restore` brings the connection back and lifts the lock. The
// peer here is the test itself, on 127.0.0.1, outside the dumped tree.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, readBundleManifest, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { connect, echoes, EchoServer } from '../helpers/echo.js';
import { waitFor } from '../helpers/target.js';

afterAll(removeTempDirs);

function snapTables(): string[] {
  return execFileSync('nft', ['list', 'tables', 'inet'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /procsnap-\d+-\d+/.exec(l)?.[0])
    .filter((t): t is string => t !== undefined);
}

function dropTable(table: string): void {
  try {
    execFileSync('nft', ['delete', 'table', 'inet', table], { stdio: 'ignore' });
  } catch {
    // gone already
  }
}

describe('dump --leave killed of a server holding a connection', () => {
  it('criu ends the tree with the connection locked; the peer is not reset, and after restore its bytes arrive and the lock is gone', async () => {
    const dir = makeTempDir('snap-leave-killed-');
    const env = { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-leave-killed-journal-') };
    const server = await EchoServer.start();
    const peer = await connect(server.port);
    let peerError: Error | undefined;
    peer.on('error', (e) => (peerError = e));
    let peerClosed = false;
    peer.on('close', () => (peerClosed = true));
    let table: string | undefined;
    let restoredPid: number | undefined;
    try {
      expect(await echoes(peer, 'before\n')).toBe(true);
      const bundle = join(dir, 'b.tar.zst');
      const dump = await runSnap(['dump', String(server.pid), '-o', bundle, '--leave', 'killed', '--json'], { env });
      expect(dump.exitCode, dump.stderr).toBe(0);
      expect(JSON.parse(dump.stdout)).toMatchObject({ finalState: 'killed', networkLockKept: { method: 'snap', connections: 1 } });
      expect(dump.stderr).toMatch(/ended by criu at the end of its dump, as --leave killed asked/);
      await waitFor(() => !server.alive() || undefined, { what: 'the server to be gone' });

      // The bundle names the lock it kept; the lock is on the host, and recover, finding its snap gone, leaves it.
      const manifest = await readBundleManifest(bundle);
      expect(manifest.finalState).toBe('killed');
      expect(manifest.networkLockKept).toMatchObject({ method: 'snap', connections: 1 });
      table = manifest.networkLockKept!.table;
      expect(snapTables()).toContain(table);
      expect(existsSync(join(env.PROCSNAP_JOURNAL_DIR, 'kept-locks', `${table}.json`))).toBe(true);
      const recover = await runSnap(['recover'], { env });
      expect(recover.exitCode, recover.stderr).toBe(0);
      expect(snapTables(), 'recover took the kept lock for an orphan').toContain(table);

      // Sent while the server is gone: the lock drops it, the peer's kernel retransmits, nothing resets the peer.
      const waiting = echoes(peer, 'while-killed\n', 60_000);
      const restore = await runSnap(['restore', bundle, '--allow-unsigned', '--json'], { env });
      expect(restore.exitCode, restore.stderr).toBe(0);
      restoredPid = (JSON.parse(restore.stdout) as { pid: number }).pid;
      expect(restore.stderr).toMatch(/the lock kept since the dump on 1 connection\(s\) lifted/);
      expect(await waiting, 'the bytes sent while the server was gone came back').toBe(true);
      expect(await echoes(peer, 'after\n')).toBe(true);
      expect(peerError).toBeUndefined();
      expect(peerClosed).toBe(false);
      expect(snapTables()).not.toContain(table);
      expect(existsSync(join(env.PROCSNAP_JOURNAL_DIR, 'kept-locks', `${table}.json`))).toBe(false);
    } finally {
      peer.destroy();
      server.stop();
      if (restoredPid !== undefined) process.kill(restoredPid, 'SIGKILL');
      if (table) dropTable(table);
    }
  });
});
