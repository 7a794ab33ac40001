// readTreeFacts on real processes the test starts, judged through findRefusals and chooseCriuOptions: a python3
// http.server with a node:net client connected to it, a Node http server (io_uring), a python3 parent that forks a
// worker sharing its listening socket (the worker running as nobody), and a python3 attached to SysV shared memory.
// Nothing is stopped or dumped here.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseCriuOptions } from '../../src/process/criu-options.js';
import { findRefusals } from '../../src/process/dump-plan.js';
import { readTreeFacts } from '../../src/process/tree-facts.js';
import { nodeBin } from '../helpers/paths.js';
import { waitFor } from '../helpers/target.js';

const PYTHON = '/usr/bin/python3';
const started: ChildProcess[] = [];
const extraPids: number[] = [];
const clients: Socket[] = [];

/** stdio to /dev/null: a pipe from Node is a unix socketpair, which would tie the process to this test's own. */
function start(command: string, args: string[]): ChildProcess {
  const child = spawn(command, args, { stdio: 'ignore' });
  started.push(child);
  return child;
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** The test's own view of a process's fds, independent of src/. */
function fdLinks(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
      try {
        return [readlinkSync(`/proc/${pid}/fd/${fd}`)];
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
}
const socketCount = (pid: number) => fdLinks(pid).filter((l) => l.startsWith('socket:')).length;

async function connectClient(port: number): Promise<Socket> {
  return waitFor(
    () =>
      new Promise<Socket | undefined>((resolve) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      }),
    { what: `a connection to 127.0.0.1:${port}`, timeoutMs: 15_000, intervalMs: 50 },
  );
}

afterAll(async () => {
  for (const c of clients) c.destroy();
  for (const pid of extraPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }
});

describe('readTreeFacts on a python3 http.server with a client connected', () => {
  let pid = 0;
  let port = 0;
  beforeAll(async () => {
    port = await freePort();
    const server = start(PYTHON, ['-m', 'http.server', String(port), '--bind', '127.0.0.1']);
    pid = server.pid!;
    clients.push(await connectClient(port));
    // http.server accepts, then waits for the request line: the listener and the accepted connection.
    await waitFor(() => socketCount(pid) >= 2, { what: 'the server to accept', timeoutMs: 10_000, detail: () => fdLinks(pid).join(' ') });
  });

  it('reads the listener with its port and the established connection', () => {
    const facts = readTreeFacts(pid, [pid]);
    const root = facts.processes[0]!;
    expect(root.pid).toBe(pid);
    expect(root.comm).toBe('python3');
    const listen = root.sockets.find((s) => s.state === 'LISTEN');
    expect(listen).toMatchObject({ family: 'inet', proto: 'tcp', local: `127.0.0.1:${port}`, localPort: port });
    const client = clients[0]!;
    expect(root.sockets.find((s) => s.state === 'ESTABLISHED')).toMatchObject({
      local: `127.0.0.1:${port}`,
      remote: `127.0.0.1:${client.localPort}`,
    });
    expect(root.uid).toEqual({ real: process.getuid!(), effective: process.geteuid!(), saved: process.geteuid!() });
    expect(facts.snap.pid).toBe(process.pid);
    expect(facts.rootPpid).toBe(process.pid);
  });

  it('chooseCriuOptions gives --tcp-established and --skip-in-flight, with reasons naming the port', () => {
    const plan = chooseCriuOptions(readTreeFacts(pid, [pid]));
    expect(plan.options).toContain('--tcp-established');
    expect(plan.options).toContain('--skip-in-flight');
    const reason = (o: string) => plan.reasons.find((r) => r.option === o)?.reason ?? '';
    expect(reason('--tcp-established')).toContain(`127.0.0.1:${port}->127.0.0.1:`);
    expect(reason('--tcp-established')).toContain(`${pid} (python3)`);
    expect(reason('--skip-in-flight')).toContain(`listens on 127.0.0.1:${port}`);
    // Started by this test: in its session, not a leader.
    expect(plan.options).toContain('--shell-job');
    expect(plan.options).not.toContain('--file-locks');
  });

  it('findRefusals has nothing against it (but a missing iptables)', () => {
    const facts = readTreeFacts(pid, [pid]);
    const refusals = findRefusals(facts);
    expect(refusals.filter((r) => r.code !== 'tool-missing')).toEqual([]);
    expect(refusals.some((r) => r.code === 'tool-missing')).toBe(!facts.tools.iptables?.onPath);
  });
});

describe('readTreeFacts on a Node 24 http server', () => {
  let pid = 0;
  let ioUring: string[] = [];
  beforeAll(async () => {
    const node = start(nodeBin, ['-e', "require('node:http').createServer(() => {}).listen(0, '127.0.0.1'); setInterval(() => {}, 1000)"]);
    pid = node.pid!;
    await waitFor(() => socketCount(pid) >= 1, { what: 'the Node server to listen', timeoutMs: 15_000, detail: () => fdLinks(pid).join(' ') });
    ioUring = fdLinks(pid).filter((l) => l === 'anon_inode:[io_uring]');
  });

  it('findRefusals says io-uring exactly when the process has an io_uring fd', () => {
    const refusals = findRefusals(readTreeFacts(pid, [pid]));
    const io = refusals.find((r) => r.code === 'io-uring');
    if (ioUring.length > 0) {
      expect(io).toMatchObject({ pid, code: 'io-uring' });
      expect(io?.cause).toContain(`${ioUring.length === 1 ? '1 io_uring instance' : `${ioUring.length} io_uring instances`}`);
      expect(io?.hint).toContain(`snap dump --core-only ${pid}`);
    } else {
      expect(io).toBeUndefined();
    }
  });

  it('this kernel and Node 24 do open io_uring (seen in /proc/PID/fd before deciding)', () => {
    // Recorded, not assumed: libuv opens its rings at loop start unless the kernel refuses io_uring_setup.
    const disabled = (() => {
      try {
        return readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim();
      } catch {
        return '0';
      }
    })();
    if (disabled === '0') expect(ioUring.length).toBeGreaterThan(0);
  });
});

describe('readTreeFacts on a worker sharing its parent\'s listening socket', () => {
  let parent = 0;
  let worker = 0;
  beforeAll(async () => {
    const pidFile = join(process.env.TMPDIR ?? '/tmp', `tree-facts-worker-${process.pid}`);
    // The parent listens, then forks a worker that becomes nobody, as nginx workers become www-data.
    const script = [
      'import os, socket, time',
      "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)",
      'pid = os.fork()',
      'if pid == 0:',
      '    os.setgid(65534); os.setuid(65534)',
      '    time.sleep(600); os._exit(0)',
      `open(${JSON.stringify(pidFile)} + '.tmp', 'w').write(str(pid)); os.rename(${JSON.stringify(pidFile)} + '.tmp', ${JSON.stringify(pidFile)})`,
      'time.sleep(600)',
    ].join('\n');
    const child = start(PYTHON, ['-c', script]);
    parent = child.pid!;
    worker = await waitFor(
      () => {
        try {
          return Number(readFileSync(pidFile, 'utf8'));
        } catch {
          return undefined;
        }
      },
      { what: 'the worker pid', timeoutMs: 15_000 },
    );
    extraPids.push(worker);
    await waitFor(() => readFileSync(`/proc/${worker}/status`, 'utf8').includes('Uid:\t65534'), { what: 'the worker to become nobody' });
  });

  it('dumping the worker is refused, naming the parent to dump instead', () => {
    const refusals = findRefusals(readTreeFacts(worker, [worker]));
    const r = refusals.find((x) => x.code === 'not-tree-root');
    expect(r, JSON.stringify(refusals)).toBeDefined();
    expect(r!.pid).toBe(worker);
    expect(r!.cause).toContain(`its parent ${parent} (python3) shares tcp 127.0.0.1:`);
    expect(r!.hint).toContain(`snap dump ${parent} (python3)`);
  });

  it('the whole tree: the worker of another uid is refused only when snap lacks CAP_SYS_RESOURCE', () => {
    const facts = readTreeFacts(parent, [parent, worker]);
    expect(facts.processes.map((p) => p.pid)).toEqual([parent, worker]);
    expect(facts.processes[1]!.uid).toEqual({ real: 65534, effective: 65534, saved: 65534 });
    const refusals = findRefusals(facts);
    const cap = refusals.filter((r) => r.code === 'capability');
    if (facts.snap.capSysResource) {
      expect(cap).toEqual([]);
    } else {
      expect(cap.map((r) => r.pid)).toEqual([worker]);
      expect(cap[0]!.cause).toContain('uid 65534');
    }
    // Shared within the tree, the listener is no reason to refuse.
    expect(refusals.filter((r) => r.code === 'not-tree-root')).toEqual([]);
    expect(chooseCriuOptions(facts).options).toContain('--skip-in-flight');
  });
});

describe('readTreeFacts on a process attached to SysV shared memory', () => {
  let pid = 0;
  beforeAll(async () => {
    // shmget(IPC_PRIVATE), shmat, then IPC_RMID: the segment goes away with the process.
    const script = [
      'import ctypes, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'libc.shmat.restype = ctypes.c_void_p',
      'shmid = libc.shmget(0, 1 << 20, 0o1600)',
      'assert shmid >= 0 and libc.shmat(shmid, None, 0) not in (None, ctypes.c_void_p(-1).value)',
      'libc.shmctl(shmid, 0, None)',
      'time.sleep(600)',
    ].join('\n');
    pid = start(PYTHON, ['-c', script]).pid!;
    await waitFor(() => (readFileSync(`/proc/${pid}/maps`, 'utf8').includes('/SYSV') ? true : undefined), { what: 'the SysV attach', timeoutMs: 15_000 });
  });

  it('is refused in the host IPC namespace, with the segment named', () => {
    const facts = readTreeFacts(pid, [pid]);
    expect(facts.processes[0]!.sysvShm).toHaveLength(1);
    const r = findRefusals(facts).find((x) => x.code === 'sysv-shm');
    expect(r).toMatchObject({ pid, comm: 'python3' });
    expect(r!.cause).toMatch(/shmid \d+/);
    expect(r!.hint).toContain(`snap dump --core-only ${pid}`);
  });
});
