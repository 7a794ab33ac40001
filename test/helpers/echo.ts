// An echo server (test/fixtures/echo_server.py) holding connections whose other ends the test holds, and the checks
// the network-lock tests make: does each connection still carry a line both ways, and is any lock left on the host.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { makeTempDir } from './bundle.js';
import { repoRoot } from './paths.js';
import { waitFor } from './target.js';

export const ECHO_SERVER = join(repoRoot, 'test', 'fixtures', 'echo_server.py');

/** A session of its own (a service's master, as criu wants it), on 127.0.0.1. */
export class EchoServer {
  private constructor(
    readonly child: ChildProcess,
    readonly pid: number,
    readonly port: number,
  ) {}

  static async start(): Promise<EchoServer> {
    const portFile = join(makeTempDir('snap-echo-'), 'port');
    const child = spawn('/usr/bin/python3', [ECHO_SERVER, portFile], { detached: true, stdio: 'ignore' });
    const port = await waitFor(() => {
      try {
        return Number(readFileSync(portFile, 'utf8')) || undefined;
      } catch {
        return undefined;
      }
    }, { what: 'the echo server to listen', timeoutMs: 10_000 });
    return new EchoServer(child, child.pid!, port);
  }

  alive(): boolean {
    try {
      return !/^State:\s*[ZX]/m.test(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  }

  stop(): void {
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export async function connect(port: number): Promise<Socket> {
  const socket = new Socket();
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.connect(port, '127.0.0.1', () => resolve());
  });
  return socket;
}

/** One line out, the same line back within timeoutMs. */
export function echoes(socket: Socket, text: string, timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    let got = '';
    const timer = setTimeout(() => done(false), timeoutMs);
    const onData = (b: Buffer) => {
      got += b.toString();
      if (got.includes(text)) done(true);
    };
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolve(ok);
    };
    socket.on('data', onData);
    socket.write(text, (e) => e && done(false));
  });
}

/** How many of the sockets echo a line of their own (`TAG-i`) within timeoutMs. */
export async function echoing(sockets: Socket[], tag: string, timeoutMs = 20_000): Promise<number> {
  const results = await Promise.all(sockets.map((s, i) => echoes(s, `${tag}-${i}\n`, timeoutMs)));
  return results.filter(Boolean).length;
}

/** The snap named by a `procsnap-PID-START` table is still running. */
function ownerAlive(line: string): boolean {
  const m = /procsnap-(\d+)-(\d+)/.exec(line);
  if (!m) return false;
  try {
    const stat = readFileSync(`/proc/${m[1]}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === m[2];
  } catch {
    return false;
  }
}

/** A network lock left on the host: criu's or snap's nftables tables, iptables rules with criu's mark (0xc114). */
export function lockLeftovers(): string[] {
  const out: string[] = [];
  try {
    // A snap still at work (another test's, another run's) holds its own table for a moment: not a leftover.
    out.push(...execFileSync('nft', ['list', 'tables', 'inet'], { encoding: 'utf8' }).split('\n').filter((l) => /CRIU-/.test(l) || (/procsnap-/.test(l) && !ownerAlive(l))));
  } catch {
    // no nft: nothing of nftables can be there either
  }
  for (const tool of ['iptables', 'ip6tables']) {
    try {
      out.push(...execFileSync(tool, ['-w', '-S'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('0xc114')));
    } catch {
      // not installed
    }
  }
  return out;
}
