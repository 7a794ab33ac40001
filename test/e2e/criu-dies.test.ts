// criu dying mid-dump, driven by strace's fault injection: the real criu is sent SIGKILL or SIGTERM at its N-th
// ptrace call, for points spread over a whole dump (test/fixtures/fake-tools, mode `killed`). Whatever the point, the
// outcome is reported as it is: a target that died is named with exit 15, never "put back"; a living one runs, its
// connection works, and no network lock of criu's is left on the host.
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { expectNoJournal, expectNoLeftovers, expectNoOutput, expectOneErrorLine, fake, processesOfRun, REAL_CRIU as REAL_CRIU_PATH, record, startDump } from '../helpers/faults.js';
import { runSnap } from '../helpers/cli.js';
import { cleanupAllTargets, startTarget, waitFor, type Target } from '../helpers/target.js';

afterAll(removeTempDirs);
afterAll(cleanupAllTargets);

/** criu's network lock on the host: its nftables tables and its iptables rules (criu's mark, 0xc114). */
function lockLeftovers(): string[] {
  const out: string[] = [];
  try {
    out.push(...execFileSync('nft', ['list', 'tables', 'inet'], { encoding: 'utf8' }).split('\n').filter((l) => /CRIU-|procsnap-/.test(l)));
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

/** How many ptrace calls a whole dump of this target makes under this criu: the range the faults are spread over. */
async function ptraceCallsOfADump(target: Target, args: string[] = []): Promise<number> {
  const countFile = join(makeTempDir('snap-ptrace-count-'), 'count');
  const dump = startDump(target, { criu: fake('criu-killed'), args, env: { SNAP_FAKE_COUNT: countFile } });
  const result = await dump.result;
  expect(result.exitCode, result.stderr).toBe(0);
  const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+ptrace$/m.exec(readFileSync(countFile, 'utf8'));
  expect(m, readFileSync(countFile, 'utf8')).not.toBeNull();
  return Number(m![1]);
}

/** `count` points from the first ptrace call to the last, evenly spread. */
function spread(calls: number, count: number): number[] {
  return [...new Set(Array.from({ length: count }, (_, i) => 1 + Math.round((i * (calls - 1)) / (count - 1))))];
}

interface Outcome {
  at: number;
  exitCode: number | null;
  died: boolean;
}

/** One dump with criu killed at its `at`-th ptrace call; checks the story told and what is left. */
async function dumpKilledAt(target: Target, at: number, signal: 'KILL' | 'TERM', args: string[] = []): Promise<Outcome> {
  const dump = startDump(target, { criu: fake('criu-killed'), args, env: { SNAP_FAKE_AT: String(at), SNAP_FAKE_SIGNAL: signal } });
  const result = await dump.result;
  const died = !target.isAlive() || target.processState() === 'Z';
  if (died) {
    // Dead: named, exit 15, and never said to be put back.
    expect(result.exitCode, result.stderr).toBe(15);
    expectOneErrorLine(result, new RegExp(`${target.pid} \\((worker|python3)\\)`));
    expect(result.stderr).not.toMatch(new RegExp(`target ${target.pid} resumed as it was`));
  } else if (result.exitCode !== 0) {
    // Alive: the dump failed (8), or criu hung in its start and the deadline came (10); the target runs again.
    expect([8, 10], result.stderr).toContain(result.exitCode);
    expect(target.threadStates().some((s) => s === 'T'), `a thread of ${target.pid} left stopped`).toBe(false);
  }
  await expectNoLeftovers(dump);
  expectNoJournal(dump);
  if (result.exitCode !== 0) expectNoOutput(dump);
  expect(lockLeftovers(), 'criu network lock left on the host').toEqual([]);
  return { at, exitCode: result.exitCode, died };
}

describe('criu killed at points spread over a dump of a 4-thread worker', () => {
  for (const signal of ['KILL', 'TERM'] as const) {
    it(`SIG${signal}: each target that died is reported dead (exit 15), each living one runs on`, async () => {
      let target = await startTarget({ threads: 4, group: 'setsid' });
      const calls = await ptraceCallsOfADump(target);
      const outcomes: Outcome[] = [];
      for (const at of spread(calls, 12)) {
        if (!target.isAlive()) target = await startTarget({ threads: 4, group: 'setsid' });
        const o = await dumpKilledAt(target, at, signal);
        outcomes.push(o);
        if (!o.died && o.exitCode !== 0) await target.waitUntilTicksAdvance(3);
      }
      record(
        `SIG${signal} at ${outcomes.length} of ${calls} ptrace calls: ${outcomes.filter((o) => o.died).length} died (all exit 15), ` +
          `${outcomes.filter((o) => !o.died).length} lived (exits ${[...new Set(outcomes.filter((o) => !o.died).map((o) => o.exitCode))].join(', ')})`,
      );
      for (const o of outcomes) if (o.died) expect(o.exitCode).toBe(15);
    });
  }
});

/** A python server holding one established connection whose other end this test holds; it echoes what it gets. */
class EchoServer {
  private constructor(
    readonly child: ChildProcess,
    readonly pid: number,
    readonly port: number,
  ) {}

  static async start(): Promise<EchoServer> {
    const dir = makeTempDir('snap-echo-');
    const portFile = join(dir, 'port');
    const script = [
      'import socket, threading',
      's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen(16)',
      `open(${JSON.stringify(portFile)}, "w").write(str(s.getsockname()[1]))`,
      'def serve(c):',
      '    while True:',
      '        d = c.recv(4096)',
      '        if not d: break',
      '        c.sendall(d)',
      'while True:',
      '    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()',
    ].join('\n');
    const child = spawn('/usr/bin/python3', ['-c', script], { detached: true, stdio: 'ignore' });
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

/** The test's end of the connection: one line out, the same line back, within a few seconds. */
async function connect(port: number): Promise<Socket> {
  const socket = new Socket();
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.connect(port, '127.0.0.1', () => resolve());
  });
  return socket;
}

async function echoes(socket: Socket, text: string, timeoutMs = 5000): Promise<boolean> {
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

describe('criu killed while it dumps a server holding an established connection', () => {
  // snap's own lock (one nftables table, criu told --network-lock skip) by default; criu's iptables lock when asked for.
  for (const lock of ['snap', 'iptables'] as const) {
    it(`network lock ${lock}: no lock rule is left, and a living server's connection works`, async () => {
      const args = lock === 'iptables' ? ['--criu-opt=--network-lock=iptables'] : [];
      let server = await EchoServer.start();
      let socket = await connect(server.port);
      const asTarget = (s: EchoServer) => ({ pid: s.pid, isAlive: () => s.alive(), processState: () => (s.alive() ? 'S' : 'Z'), threadStates: () => threadStatesOf(s.pid) }) as unknown as Target;
      try {
        expect(await echoes(socket, 'before\n')).toBe(true);
        const calls = await ptraceCallsOfADump(asTarget(server), args);
        expect(await echoes(socket, 'after a whole dump\n'), 'the connection works after a dump').toBe(true);
        let died = 0;
        let lived = 0;
        for (const at of spread(calls, 8)) {
          if (!server.alive()) {
            socket.destroy();
            server.stop();
            server = await EchoServer.start();
            socket = await connect(server.port);
          }
          const o = await dumpKilledAt(asTarget(server), at, 'KILL', args);
          if (o.died) died++;
          else {
            lived++;
            expect(await echoes(socket, `after criu was killed at ${at}\n`), `connection after criu was killed at ptrace call ${at}`).toBe(true);
          }
        }
        record(`${lock}: criu killed at 8 of ${calls} ptrace calls: ${died} server(s) died (exit 15), ${lived} lived with the connection working; no lock left`);
      } finally {
        socket.destroy();
        server.stop();
      }
    });
  }
});

describe('snap killed (SIGKILL) while criu dumps a server holding an established connection', () => {
  it("its network lock stays on the host until `snap recover`, which removes it and resumes the server: the connection works", async () => {
    const server = await EchoServer.start();
    const socket = await connect(server.port);
    const asTarget = { pid: server.pid } as unknown as Target;
    try {
      expect(await echoes(socket, 'before\n')).toBe(true);
      const dump = startDump(asTarget, { criu: REAL_CRIU_PATH });
      // The lock is set once the tree is stopped, just before criu's gate opens.
      await waitFor(() => snapTables().length > 0, { what: "snap's lock table", timeoutMs: 30_000, intervalMs: 2 });
      dump.signal('SIGKILL');
      const result = await dump.result;
      expect(result.signal).toBe('SIGKILL');
      // criu is not killed with snap: it finishes, and the lock snap set is still there, the server still stopped.
      await waitFor(() => !processesOfRun(dump.token).some((l) => /criu/.test(l)), { what: 'criu to finish', timeoutMs: 60_000 });
      expect(snapTables()).toHaveLength(1);
      const recovered = await runSnap(['recover', '--json'], { env: { SNAP_JOURNAL_DIR: dump.journalDir ?? undefined } });
      expect(recovered.exitCode, recovered.stderr).toBe(0);
      expect(recovered.stdout).toMatch(/removed the network lock: nftables table inet procsnap-/);
      expect(snapTables()).toEqual([]);
      expect(lockLeftovers()).toEqual([]);
      expect(threadStatesOf(server.pid).some((st) => st === 'T')).toBe(false);
      expect(await echoes(socket, 'after recover\n'), 'the connection after recover').toBe(true);
    } finally {
      socket.destroy();
      server.stop();
    }
  });
});

function snapTables(): string[] {
  try {
    return execFileSync('nft', ['list', 'tables', 'inet'], { encoding: 'utf8' }).split('\n').filter((l) => /procsnap-/.test(l));
  } catch {
    return [];
  }
}

function threadStatesOf(pid: number): string[] {
  try {
    return execFileSync('sh', ['-c', `cat /proc/${pid}/task/*/stat`], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(l.lastIndexOf(')') + 2).split(' ')[0]!);
  } catch {
    return [];
  }
}
