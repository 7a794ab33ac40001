// A server holding many established connections: criu locks each one while it dumps them, and every one must work
// afterwards. The test holds the other ends itself (127.0.0.1 only), so each connection is checked end to end.
import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { echoing, EchoServer, lockLeftovers } from '../helpers/echo.js';
import { record } from '../helpers/faults.js';

afterAll(removeTempDirs);

const CONNECTIONS = 1000;

async function openConnections(port: number, n: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  // In batches: the listen backlog is deep, but a thousand SYNs at once is not what this test is about.
  for (let i = 0; i < n; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, n - i) }, () =>
        new Promise<void>((resolve, reject) => {
          const s = new Socket();
          sockets.push(s);
          s.once('error', reject);
          s.connect(port, '127.0.0.1', () => resolve());
        }),
      ),
    );
  }
  return sockets;
}

describe(`a server holding ${CONNECTIONS} established loopback connections`, () => {
  it('dumps with exit 0; every connection works afterwards, and no network lock of criu is left', async () => {
    const dir = makeTempDir('snap-conns-');
    const server = await EchoServer.start();
    let sockets: Socket[] = [];
    try {
      sockets = await openConnections(server.port, CONNECTIONS);
      expect(await echoing(sockets, 'before')).toBe(CONNECTIONS);
      const out = join(dir, 'b.tar.zst');
      const run = await runSnap(['dump', String(server.pid), '-o', out, '--json'], { env: { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-conns-journal-') }, timeoutMs: 300_000 });
      expect(run.exitCode, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout) as { freezeWindowMs: number; criuOptions: { option: string }[] };
      expect(result.criuOptions.map((o) => o.option)).toContain('--tcp-established');
      expect(await echoing(sockets, 'after')).toBe(CONNECTIONS);
      expect(lockLeftovers()).toEqual([]);
      record(`${CONNECTIONS} connections: freeze ${result.freezeWindowMs.toFixed(0)} ms with ${result.criuOptions.map((o) => o.option).join(' ')}`);
    } finally {
      for (const s of sockets) s.destroy();
      server.stop();
    }
  });
});
