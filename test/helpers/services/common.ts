// The part every service shares: a free port on 127.0.0.1, a private temp dir, a foreground process started in a
// session of its own, its process tree read from /proc, a bounded `ready` and a stop() that leaves nothing behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { processExists, readProcFile, readProcStat, waitFor } from '../target.js';

export interface ServiceHandle {
  readonly name: string;
  /** The process to capture: the service itself (never a wrapper), a session leader and its own process group. */
  readonly pid: number;
  /** The port it listens on, on 127.0.0.1 (0 for a service that listens on none: the runc container). */
  readonly port: number;
  /** Its private temp dir, removed by stop(). */
  readonly dir: string;
  /** The whole tree from /proc/PID/task/STAR/children: pid first, then its descendants, breadth first. */
  pids(): number[];
  /** Resolves once the service really answers (and, for multi-process services, its workers exist). */
  readonly ready: Promise<void>;
  /** SIGKILL the whole tree, wait until every pid is gone (and reaped), remove dir. Idempotent. */
  stop(): Promise<void>;
  /** The last lines of its stdout and stderr, for failure messages. */
  logTail(lines?: number): string;
}

// --- the registry -------------------------------------------------------------------------------------------------

export interface Stoppable {
  stop(): Promise<unknown>;
}

const liveServices = new Set<ServiceHandle>();
const liveClients = new Set<Stoppable>();

export function registerService(service: ServiceHandle): void {
  liveServices.add(service);
}
export function unregisterService(service: ServiceHandle): void {
  liveServices.delete(service);
}
export function registerClient(client: Stoppable): void {
  liveClients.add(client);
}
export function unregisterClient(client: Stoppable): void {
  liveClients.delete(client);
}

/** Services started by this test file (and not stopped yet). */
export function liveServiceHandles(): ServiceHandle[] {
  return [...liveServices];
}

/** Stops every load client, then every service this test file started and did not stop; for afterAll. */
export async function stopAllServices(): Promise<void> {
  const clientOutcomes = await Promise.allSettled([...liveClients].map((client) => client.stop()));
  const serviceOutcomes = await Promise.allSettled([...liveServices].map((service) => service.stop()));
  const failures = [...clientOutcomes, ...serviceOutcomes].flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
  if (failures.length > 0) throw new AggregateError(failures, `${failures.length} service(s) or client(s) could not be stopped`);
}

/** Last resort when the test worker exits without its hooks running: SIGKILL every tree still registered. */
const lastResortKills = new Set<() => void>();
export function onProcessExit(kill: () => void): () => void {
  lastResortKills.add(kill);
  return () => lastResortKills.delete(kill);
}
process.once('exit', () => {
  for (const kill of lastResortKills) {
    try {
      kill();
    } catch {
      // best effort
    }
  }
});

// --- ports, dirs, /proc -------------------------------------------------------------------------------------------

/** A port that was free a moment ago: bind 127.0.0.1:0, read the port, close. The caller retries on EADDRINUSE. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.unref();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error(`no port from ${JSON.stringify(address)}`);
  return address.port;
}

/** mkdtemp under os.tmpdir() (read at call time: the suite gives each test file its own TMPDIR). */
export function makeServiceDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `snap-svc-${name}-`));
}

/** Runs `start` with a new service dir, removing the dir if it throws. */
export async function inServiceDir<T>(name: string, start: (dir: string) => Promise<T>): Promise<T> {
  const dir = makeServiceDir(name);
  try {
    return await start(dir);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Lets another user (postgres, www-data) reach `path`: adds the search bit (o+x, never o+r) to every ancestor
 *  lacking it. The suite's private TMPDIR is 0700, so this turns it into 0701. */
export function makeTraversable(path: string): void {
  const chain: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    chain.push(p);
    if (dirname(p) === p) break;
  }
  for (const p of chain) {
    const mode = statSync(p).mode & 0o7777;
    if ((mode & 0o001) === 0) chmodSync(p, mode | 0o001);
  }
}

/** The process tree under `root`, root first, from /proc/PID/task/TID/children (threads can fork too). */
export function processTree(root: number): number[] {
  const seen: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    if (seen.includes(pid) || !processExists(pid)) continue;
    seen.push(pid);
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const children = readProcFile(`/proc/${pid}/task/${tid}/children`);
      if (children === undefined) continue;
      for (const child of children.trim().split(/\s+/)) if (child !== '') queue.push(Number(child));
    }
  }
  return seen;
}

/** Every process whose session is `sid`. A session id is not reused while a member lives, so for a service we
 *  started with setsid these are all its own, even orphans whose parent died (reparented to PID 1). */
export function sessionMembers(sid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat !== undefined && stat.session === sid) members.push(stat.pid);
  }
  return members;
}

export function childPids(pid: number): number[] {
  return processTree(pid).filter((p) => readProcStat(p)?.ppid === pid);
}

export function readCmdline(pid: number): string | undefined {
  return readProcFile(`/proc/${pid}/cmdline`)?.split('\0').filter((s) => s !== '').join(' ');
}

export function threadCount(pid: number): number {
  const status = readProcFile(`/proc/${pid}/status`);
  return Number(/^Threads:\s+(\d+)$/m.exec(status ?? '')?.[1] ?? 0);
}

/** The real uid of `pid` (first field of the Uid: line). */
export function processUid(pid: number): number | undefined {
  const status = readProcFile(`/proc/${pid}/status`);
  const uid = /^Uid:\s+(\d+)/m.exec(status ?? '')?.[1];
  return uid === undefined ? undefined : Number(uid);
}

export function describePid(pid: number): string {
  const stat = readProcStat(pid);
  if (stat === undefined) return `${pid} gone`;
  return `${pid} (${stat.comm}) state ${stat.state} ppid ${stat.ppid}`;
}

/** Inodes of the sockets listening on 127.0.0.1:port (or any address), from /proc/net/tcp and tcp6 (a JVM binds
 *  127.0.0.1 through a dual-stack socket: ::ffff:127.0.0.1). */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const locals = new Set(
    ['0100007F', '00000000', '0000000000000000FFFF00000100007F', '00000000000000000000000000000000'].map((a) => `${a}:${hexPort}`),
  );
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (readProcFile(table) ?? '').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === '0A' && locals.has(cols[1] ?? '')) inodes.add(cols[9]!);
    }
  }
  return inodes;
}

/** True once a process of the tree under `root` holds a socket listening on `port`. */
export function treeListensOn(root: number, port: number): boolean {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return false;
  for (const pid of processTree(root)) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
      if (inode !== undefined && inodes.has(inode)) return true;
    }
  }
  return false;
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ESRCH') throw error;
  }
}

function isZombie(pid: number): boolean {
  return readProcStat(pid)?.state === 'Z';
}

/** SIGKILLs `pids` (and anything that appears under them) until all are gone. A zombie is not gone: it still holds
 *  its pid. Orphans are reaped by PID 1, which here (process_api) polls every ~2 s, hence the generous deadline. */
export async function killTree(pids: number[], { what, timeoutMs = 15_000 }: { what: string; timeoutMs?: number }): Promise<void> {
  const all = new Set(pids);
  const sweep = (): void => {
    for (const pid of [...all]) for (const p of processTree(pid)) all.add(p);
    for (const pid of all) if (processExists(pid) && !isZombie(pid)) signalPid(pid, 'SIGKILL');
  };
  sweep();
  await waitFor(
    () => {
      sweep();
      return [...all].every((pid) => !processExists(pid));
    },
    {
      what: `every process of ${what} to be gone after SIGKILL`,
      timeoutMs,
      intervalMs: 20,
      detail: () =>
        [...all]
          .filter((pid) => processExists(pid))
          .map(describePid)
          .join('; ') + ' (a zombie stays until its parent reaps it)',
    },
  );
}

// --- a spawned foreground service ---------------------------------------------------------------------------------

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function tailOf(path: string, lines: number): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return '';
  }
  return text.split('\n').slice(-lines - 1).join('\n').trim();
}

export interface LaunchSpec {
  command: string;
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
}

export interface LaunchOptions {
  name: string;
  dir: string;
  /** The command for a given port; called again with a new port when the last one was lost (EADDRINUSE). */
  build: (port: number) => LaunchSpec | Promise<LaunchSpec>;
  /** How long the process may take to hold its listening socket. */
  bindTimeoutMs?: number;
  /** Extra log files (besides stdout/stderr) that may say EADDRINUSE (nginx's error.log). */
  extraLogs?: string[];
  attempts?: number;
}

export interface Launched {
  child: ChildProcess;
  pid: number;
  port: number;
  /** Set once Node has reaped the child. */
  exitStatus: () => ExitStatus | undefined;
  stdoutPath: string;
  stderrPath: string;
}

const addressInUse = /address already in use|EADDRINUSE|errno 98|\(98:/i;

/** Spawns `build(port)` detached (a session leader, its own process group), stdin /dev/null, stdout/stderr to
 *  files in dir, and waits until the process tree holds a socket listening on 127.0.0.1:port. If the process exits
 *  first saying the address is in use (someone took the port between freePort() and the bind), retries on a new
 *  port. */
export async function launchListening(options: LaunchOptions): Promise<Launched> {
  const { name, dir, build, bindTimeoutMs = 20_000, extraLogs = [], attempts = 5 } = options;
  const stdoutPath = join(dir, 'stdout.log');
  const stderrPath = join(dir, 'stderr.log');
  let lastFailure = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const port = await freePort();
    const spec = await build(port);
    for (const log of extraLogs) rmSync(log, { force: true }); // each attempt is judged by its own words
    const launched = await spawnDetached(spec, stdoutPath, stderrPath);
    // What to kill if this attempt fails: our child and its tree while it lives; once it is reaped, its session's
    // orphans (none if its pid is already someone else's: a session id is not reused while it has members).
    const leftovers = (): number[] => {
      if (launched.exitStatus() === undefined) return [launched.pid, ...processTree(launched.pid), ...sessionMembers(launched.pid)];
      return processExists(launched.pid) ? [] : sessionMembers(launched.pid);
    };
    const logs = (): string =>
      [stdoutPath, stderrPath, ...extraLogs]
        .map((p) => tailOf(p, 15))
        .filter((t) => t !== '')
        .join('\n');
    let exited: ExitStatus | undefined;
    try {
      await waitFor(
        () => {
          exited = launched.exitStatus();
          if (exited !== undefined) return 'exited';
          return treeListensOn(launched.pid, port) && 'listening';
        },
        {
          what: `${name} (pid ${launched.pid}) to listen on 127.0.0.1:${port}`,
          timeoutMs: bindTimeoutMs,
          intervalMs: 20,
          detail: () => `${describePid(launched.pid)}; log: ${logs() || '(empty)'}`,
        },
      );
    } catch (error) {
      await killTree(leftovers(), { what: name }).catch(() => undefined);
      throw error;
    }
    if (exited === undefined) return { ...launched, port };
    const log = logs();
    lastFailure = `${name} exited (code ${exited.code}, signal ${exited.signal}) before listening on ${port}: ${log || '(no output)'}`;
    // What it left may still be alive (nginx's workers, postgres's children): kill it before the next attempt.
    await killTree(leftovers(), { what: name }).catch(() => undefined);
    if (!addressInUse.test(log)) throw new Error(`${lastFailure}\ncommand: ${spec.command} ${spec.args.join(' ')}`);
  }
  throw new Error(`${name}: gave up after ${attempts} attempts, each port was taken: ${lastFailure}`);
}

export async function spawnDetached(
  spec: LaunchSpec,
  stdoutPath: string,
  stderrPath: string,
): Promise<{ child: ChildProcess; pid: number; exitStatus: () => ExitStatus | undefined; stdoutPath: string; stderrPath: string }> {
  const out = openSync(stdoutPath, 'w');
  const err = openSync(stderrPath, 'w');
  let child: ChildProcess;
  try {
    child = spawn(spec.command, spec.args, {
      detached: true, // setsid(): a session leader and its own process group, as a service manager starts it
      stdio: ['ignore', out, err], // 'ignore' is /dev/null
      env: { ...process.env, ...spec.env },
      cwd: spec.cwd,
    });
  } finally {
    closeSync(out);
    closeSync(err);
  }
  let status: ExitStatus | undefined;
  child.once('exit', (code, signal) => {
    status = { code, signal };
  });
  try {
    await once(child, 'spawn');
  } catch (error) {
    throw new Error(`could not start ${spec.command}: ${(error as Error).message}`);
  }
  return { child, pid: child.pid!, exitStatus: () => status, stdoutPath, stderrPath };
}

export interface ServiceInit {
  name: string;
  dir: string;
  launched: Launched;
  /** The readiness probe: a truthy value once ready, false/undefined meanwhile; throwing fails `ready`. */
  probe: () => unknown;
  /** What was last seen, for the timeout message. */
  detail?: () => string;
  readyTimeoutMs: number;
  /** Extra cleanup before the dir is removed. */
  beforeRemove?: () => void | Promise<void>;
}

/** A spawned service: our child, in a session of its own. */
export class SpawnedService implements ServiceHandle {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly dir: string;
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly exitStatus: () => ExitStatus | undefined;
  private readonly stdoutPath: string;
  private readonly stderrPath: string;
  private stopping: Promise<void> | undefined;
  private readonly forgetLastResort: () => void;
  private readonly beforeRemove: (() => void | Promise<void>) | undefined;
  protected extraLogs: string[] = [];

  constructor(init: ServiceInit) {
    this.name = init.name;
    this.dir = init.dir;
    this.child = init.launched.child;
    this.pid = init.launched.pid;
    this.port = init.launched.port;
    this.exitStatus = init.launched.exitStatus;
    this.stdoutPath = init.launched.stdoutPath;
    this.stderrPath = init.launched.stderrPath;
    this.beforeRemove = init.beforeRemove;
    this.forgetLastResort = onProcessExit(() => {
      for (const pid of this.pids()) signalPid(pid, 'SIGKILL');
    });
    registerService(this);
    this.ready = waitFor(
      () => {
        if (this.stopping) throw new Error(`${this.name} was stopped before it was ready`);
        const exit = this.exitStatus();
        if (exit) throw new Error(`${this.name} (pid ${this.pid}) exited before it was ready (code ${exit.code}, signal ${exit.signal}): ${this.logTail()}`);
        return init.probe();
      },
      {
        what: `${this.name} (pid ${this.pid}, port ${this.port}) to be ready`,
        timeoutMs: init.readyTimeoutMs,
        intervalMs: 25,
        detail: () => `${init.detail?.() ?? ''}; tree ${this.pids().map(describePid).join(', ') || 'none'}; log: ${this.logTail(8) || '(empty)'}`,
      },
    ).then(() => undefined);
    this.ready.catch(() => undefined); // awaited by the test; not an unhandled rejection if it never is
  }

  /** True while `pid` holds this service: our live child, or (once our child has exited: a CRIU restore brings the
   *  pid back as someone else's child) a process whose command line names our private dir. */
  holdsPid(): boolean {
    if (!processExists(this.pid)) return false;
    if (this.exitStatus() === undefined) return true;
    return readCmdline(this.pid)?.includes(this.dir) ?? false;
  }

  pids(): number[] {
    return this.holdsPid() ? processTree(this.pid) : [];
  }

  logTail(lines = 15): string {
    return [this.stdoutPath, this.stderrPath, ...this.extraLogs]
      .map((p) => tailOf(p, lines))
      .filter((t) => t !== '')
      .join('\n');
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    try {
      // The tree, and whatever else is left in the service's session and process group (a worker orphaned when its
      // master died). A session or group id is not reused while it has a member, so if the pid is free those are
      // ours; if someone else holds the pid, our session is empty and theirs is none of our business.
      const pidIsOthers = processExists(this.pid) && !this.holdsPid();
      const doomed = pidIsOthers ? [] : [...new Set([...this.pids(), ...sessionMembers(this.pid)])];
      if (!pidIsOthers) signalPid(-this.pid, 'SIGKILL');
      await killTree(doomed, { what: `${this.name} (pid ${this.pid})` });
      // Our own child must be reaped by Node, not merely dead.
      await waitFor(() => this.exitStatus() !== undefined, {
        what: `${this.name} (pid ${this.pid}) to be reaped`,
        timeoutMs: 10_000,
        detail: () => describePid(this.pid),
      });
      await this.beforeRemove?.();
    } finally {
      this.forgetLastResort();
      rmSync(this.dir, { recursive: true, force: true });
      unregisterService(this);
    }
  }
}

// --- probes -------------------------------------------------------------------------------------------------------

export interface HttpReply {
  status: number;
  body: string;
}

/** One GET on a connection of its own, bounded by timeoutMs. */
export function httpGet(port: number, path = '/', timeoutMs = 2000): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no reply in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** A probe for `SpawnedService`: GET / answers 200 with `body`; records what it saw in `seen.last`. */
export function httpProbe(port: number, expectBody: string | undefined, seen: { last: string }): () => Promise<boolean> {
  return async () => {
    try {
      const reply = await httpGet(port);
      if (reply.status !== 200) {
        seen.last = `GET / answered ${reply.status}`;
        return false;
      }
      if (expectBody !== undefined && reply.body !== expectBody) {
        seen.last = `GET / answered 200 with ${reply.body.length} bytes, not the expected ${expectBody.length}: ${JSON.stringify(reply.body.slice(0, 80))}`;
        return false;
      }
      seen.last = 'GET / answered 200';
      return true;
    } catch (error) {
      seen.last = `GET / failed: ${(error as Error).message}`;
      return false;
    }
  };
}

/** A page of `bytes` bytes (at least a line), recognisable and different for each service. */
export function makeContent(name: string, bytes = 4096): string {
  const head = `<html><body><h1>procsnap ${name} test page</h1>\n`;
  const tail = '</body></html>\n';
  let middle = '';
  for (let i = 0; head.length + middle.length + tail.length < bytes; i++) middle += `<p>line ${i} of the ${name} page</p>\n`;
  return head + middle + tail;
}
