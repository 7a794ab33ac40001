// A server holding many established connections: criu locks each one while it dumps them, and every one must work
// afterwards. The test holds the other ends itself (127.0.0.1 only), so each connection is checked end to end.
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { record } from '../helpers/faults.js';
import { waitFor } from '../helpers/target.js';

afterAll(removeTempDirs);

const CONNECTIONS = 1000;

/** One python process, one thread, a selector: echoes every line back on the connection it came from. */
const ECHO_SERVER = `
import selectors, socket, sys
sel = selectors.DefaultSelector()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen(4096)
s.setblocking(False)
sel.register(s, selectors.EVENT_READ)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            c, _ = s.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        else:
            try:
                d = key.fileobj.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            if d:
                key.fileobj.sendall(d)
            else:
                sel.unregister(key.fileobj); key.fileobj.close()
`;

function lockLeftovers(): string[] {
  const out: string[] = [];
  try {
    out.push(...execFileSync('nft', ['list', 'tables', 'inet'], { encoding: 'utf8' }).split('\n').filter((l) => /CRIU-|procsnap-/.test(l)));
  } catch {
    // no nft
  }
  try {
    out.push(...execFileSync('iptables', ['-w', '-S'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('0xc114')));
  } catch {
    // no iptables
  }
  return out;
}

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

/** How many of the sockets echo a line of their own back within timeoutMs. */
async function echoing(sockets: Socket[], tag: string, timeoutMs = 20_000): Promise<number> {
  const results = await Promise.all(
    sockets.map(
      (s, i) =>
        new Promise<boolean>((resolve) => {
          const want = `${tag}-${i}\n`;
          let got = '';
          const timer = setTimeout(() => finish(false), timeoutMs);
          const onData = (b: Buffer) => {
            got += b.toString();
            if (got.includes(want)) finish(true);
          };
          const finish = (ok: boolean) => {
            clearTimeout(timer);
            s.off('data', onData);
            resolve(ok);
          };
          s.on('data', onData);
          s.write(want, (e) => e && finish(false));
        }),
    ),
  );
  return results.filter(Boolean).length;
}

describe(`a server holding ${CONNECTIONS} established loopback connections`, () => {
  it('dumps with exit 0; every connection works afterwards, and no network lock of criu is left', async () => {
    const dir = makeTempDir('snap-conns-');
    const portFile = join(dir, 'port');
    const server = spawn('/usr/bin/python3', ['-c', ECHO_SERVER, portFile], { detached: true, stdio: 'ignore' });
    let sockets: Socket[] = [];
    try {
      const port = await waitFor(() => {
        try {
          return Number(readFileSync(portFile, 'utf8')) || undefined;
        } catch {
          return undefined;
        }
      }, { what: 'the echo server to listen', timeoutMs: 10_000 });
      sockets = await openConnections(port, CONNECTIONS);
      expect(await echoing(sockets, 'before')).toBe(CONNECTIONS);
      const out = join(dir, 'b.tar.zst');
      const run = await runSnap(['dump', String(server.pid), '-o', out, '--json'], { env: { SNAP_JOURNAL_DIR: makeTempDir('snap-conns-journal-') }, timeoutMs: 300_000 });
      expect(run.exitCode, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout) as { freezeWindowMs: number; criuOptions: { option: string }[] };
      expect(result.criuOptions.map((o) => o.option)).toContain('--tcp-established');
      expect(await echoing(sockets, 'after')).toBe(CONNECTIONS);
      expect(lockLeftovers()).toEqual([]);
      record(`${CONNECTIONS} connections: freeze ${result.freezeWindowMs.toFixed(0)} ms with ${result.criuOptions.map((o) => o.option).join(' ')}`);
    } finally {
      for (const s of sockets) s.destroy();
      server.kill('SIGKILL');
    }
  });
});
